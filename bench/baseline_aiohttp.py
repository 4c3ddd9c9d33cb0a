"""The floor: a minimal aiohttp + uvloop passthrough with no features.

Reads the body, forwards it with one pooled ``aiohttp.ClientSession`` (the
upstream key replaces the caller's), returns the body; an SSE answer is relayed
chunk by chunk as it arrives. No auth, no parsing, no logging, no timeouts
beyond aiohttp's. This is what Qiao's own HTTP stack costs before any feature.

    python bench/baseline_aiohttp.py --port 9100 --upstream http://127.0.0.1:9001/v1
"""

from __future__ import annotations

import argparse
import sys

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(upstream: str, api_key: str) -> web.Application:
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    base = upstream.rstrip("/")

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session = request.app[SESSION]
        async with session.post(f"{base}/chat/completions", data=body, headers=auth) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if ctype.startswith("text/event-stream"):
                resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
            data = await up.read()
            return web.Response(status=up.status, body=data, headers={"Content-Type": ctype})

    async def health(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    async def on_startup(app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        app[SESSION] = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))

    async def on_cleanup(app: web.Application) -> None:
        await app[SESSION].close()

    app = web.Application()
    app.add_routes(
        [
            web.post("/v1/chat/completions", forward),
            web.post("/chat/completions", forward),
            web.get("/health", health),
        ]
    )
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument("--upstream", default="http://127.0.0.1:9001/v1")
    p.add_argument("--api-key", default="sk-bench-upstream-key")
    args = p.parse_args()
    import uvloop

    app = build_app(args.upstream, args.api_key)

    def ready(*_: object) -> None:
        print(f"baseline ready on http://{args.host}:{args.port}", file=sys.stderr, flush=True)

    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=ready,
        loop=uvloop.new_event_loop(),
        backlog=1024,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
