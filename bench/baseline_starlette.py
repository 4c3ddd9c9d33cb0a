"""The other stack: a minimal Starlette + uvicorn + httpx passthrough, no features.

The same job as ``baseline_aiohttp.py`` on the ASGI stack most Python gateways
use (LiteLLM's proxy is FastAPI/Starlette on uvicorn), to show what choosing the
HTTP server and client costs by itself. Runs from its own venv (bench/.alt-venv).

    bench/.alt-venv/bin/python bench/baseline_starlette.py --port 9200 \
        --upstream http://127.0.0.1:9001/v1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


def build_app(upstream: str, api_key: str) -> Starlette:
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    url = upstream.rstrip("/") + "/chat/completions"
    limits = httpx.Limits(max_connections=1100, max_keepalive_connections=100)
    state: dict[str, httpx.AsyncClient] = {}

    async def forward(request: Request) -> Response:
        body = await request.body()
        client = state["client"]
        req = client.build_request("POST", url, content=body, headers=auth)
        up = await client.send(req, stream=True)
        ctype = up.headers.get("content-type", "application/json")
        if ctype.startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in up.aiter_raw():
                        yield chunk
                finally:
                    await up.aclose()

            return StreamingResponse(relay(), status_code=up.status_code, media_type=ctype)
        try:
            data = await up.aread()
        finally:
            await up.aclose()
        return Response(data, status_code=up.status_code, media_type=ctype)

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(limits=limits, timeout=None) as client:
            state["client"] = client
            yield

    routes = [
        Route("/v1/chat/completions", forward, methods=["POST"]),
        Route("/chat/completions", forward, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9200)
    p.add_argument("--upstream", default="http://127.0.0.1:9001/v1")
    p.add_argument("--api-key", default="sk-bench-upstream-key")
    args = p.parse_args()
    app = build_app(args.upstream, args.api_key)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=1024,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
