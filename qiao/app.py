"""Wiring only: the aiohttp application, its routes, and the server loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import orjson
from aiohttp import web

from . import __version__
from .admin.api import AdminAPI
from .auth import credential_from
from .config import Config
from .engine import Engine
from .errors import NotFound, QiaoError
from .observability.accesslog import AccessLog
from .surfaces.anthropic import AnthropicSurface
from .surfaces.gemini import GeminiSurface
from .surfaces.openai import OpenAISurface, error_body
from .workers import hangup, watch_supervisor

__all__ = ["build_app", "run_server", "start_server"]

ENGINE = web.AppKey("engine", Engine)
ADMIN = web.AppKey("admin", AdminAPI)
_JSON = "application/json"
log = logging.getLogger("qiao.app")


def build_app(config: Config, *, access_log: AccessLog | None = None) -> web.Application:
    engine = Engine(config, access_log=access_log)
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[ENGINE] = engine
    openai = OpenAISurface(engine)
    anthropic = AnthropicSurface(engine)
    gemini = GeminiSurface(engine)
    models = _ModelsDispatch(openai, anthropic, gemini)
    app.add_routes(openai.routes("/v1"))
    app.add_routes(openai.routes(""))  # clients configured with a base URL without /v1
    app.add_routes(openai.azure_routes())
    app.add_routes(anthropic.routes())
    app.add_routes(gemini.routes())
    admin = AdminAPI(engine)
    app[ADMIN] = admin
    app.add_routes(admin.routes())
    if config.server.cors_origins:
        cors = _Cors(config.server.cors_origins)
        app.on_response_prepare.append(cors.on_prepare)
        app.router.add_route("OPTIONS", "/{tail:.*}", cors.preflight)
    app.add_routes(
        [
            web.get("/v1/models", models.list),
            web.get("/v1/models/{model:.+}", models.get),
            web.get("/models", openai.list_models),
            web.get("/models/{model:.+}", openai.get_model),
            web.get("/healthz", _healthz),
            web.get("/readyz", _readyz),
            web.get("/", _root),
            web.route("*", "/{tail:.*}", _not_found),
        ]
    )

    async def _start(app: web.Application) -> None:
        engine = app[ENGINE]
        await engine.start()
        _warn_weak_admin_key(config)
        if config.admin_key is None and not await engine.has_store_admin():
            shared = os.environ.get("QIAO__BOOTSTRAP_TOKEN")
            token = app[ADMIN].enable_bootstrap(shared)
            if shared and os.environ.get("QIAO_WORKER_INDEX") not in (None, "0"):
                return  # worker 0 prints the shared token
            # No default password: a one-time token, shown once, creates the first admin key.
            print(
                "qiao: no admin credential yet; create the first admin key (once) with\n"
                f"  curl -X POST http://{config.listen}/admin/bootstrap "
                f"-H 'Authorization: Bearer {token}'",
                file=sys.stderr,
            )

    async def _close(app: web.Application) -> None:
        await app[ENGINE].close()

    app.on_startup.append(_start)
    app.on_cleanup.append(_close)
    return app


class _Cors:
    """CORS for browser clients (LobeChat client mode, anthropic-dangerous-direct-browser-access).

    Only the configured origins get CORS headers; credentials travel in headers, never cookies.
    """

    EXPOSE = "x-request-id, request-id, retry-after, x-qiao-provider, x-qiao-overhead-ms"

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(origins)

    def _allowed(self, origin: str | None) -> bool:
        return origin is not None and (self._any or origin in self._origins)

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin")
        if not self._allowed(origin):
            return web.Response(status=403)
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, HEAD, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "*"
                ),
                "Access-Control-Max-Age": "600",
            },
        )

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if self._allowed(origin):
            assert origin is not None
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = self.EXPOSE
            response.headers["Vary"] = "Origin"


class _ModelsDispatch:
    """``GET /v1/models`` is shared by three protocols: the headers tell whose it is."""

    def __init__(self, openai: OpenAISurface, anthropic: AnthropicSurface, gemini: GeminiSurface):
        self._openai, self._anthropic, self._gemini = openai, anthropic, gemini

    def _pick(self, request: web.Request) -> OpenAISurface | AnthropicSurface | GeminiSurface:
        headers = request.headers
        if "x-goog-api-key" in headers or "x-goog-api-client" in headers or "key" in request.query:
            return self._gemini
        if "anthropic-version" in headers:
            return self._anthropic
        return self._openai

    async def list(self, request: web.Request) -> web.Response:
        return await self._pick(request).list_models(request)

    async def get(self, request: web.Request) -> web.Response:
        return await self._pick(request).get_model(request)


async def _root(request: web.Request) -> web.Response:
    return web.json_response({"name": "qiao", "version": __version__}, dumps=_dumps)


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"}, dumps=_dumps)


async def _readyz(request: web.Request) -> web.Response:
    """States and error classes for anyone (a load balancer); the scrubbed upstream messages
    only for a caller presenting an admin or viewer key."""
    engine = request.app[ENGINE]
    degraded: dict[str, str] = dict(engine.health.degraded(detail=_is_operator(request)))
    if engine.keys.store_down:
        degraded["store"] = "database unreachable: known keys served from cache, usage journaled"
    if engine.gate.limiter.degraded:
        degraded["redis"] = "Redis unreachable: limits enforced per process"
    if engine.writer.degraded:
        degraded["usage_writer"] = f"usage waiting in the journal ({engine.writer.journaled})"
    body = {
        "status": "degraded" if degraded else "ready",
        "providers": sorted(engine.upstreams),
        "degraded": degraded,
    }
    return web.json_response(body, dumps=_dumps)


def _is_operator(request: web.Request) -> bool:
    if not credential_from(request.headers, request.query):
        return False
    try:
        principal = request.app[ENGINE].keys.authenticate_request(
            request.headers, request.query, request.remote
        )
    except QiaoError:
        return False
    return principal.admin or principal.role in ("admin", "viewer")


def _warn_weak_admin_key(config: Config) -> None:
    """Loudly, once per gateway (worker 0 speaks for the others): on stderr, where the operator
    looks at start-up, and in the log when logging is configured (else stderr is the log)."""
    warning = config.admin_key_warning
    if warning is None or os.environ.get("QIAO_WORKER_INDEX") not in (None, "0"):
        return
    print(f"qiao: WARNING: {warning}", file=sys.stderr)
    if log.hasHandlers():
        log.warning(warning)


async def _not_found(request: web.Request) -> web.Response:
    err = NotFound(f"Invalid URL ({request.method} {request.path})", code="unknown_url")
    return web.Response(status=404, body=error_body(err), content_type=_JSON)


async def start_server(
    config: Config,
    *,
    access_log: AccessLog | None = None,
    port: int | None = None,
    reuse_port: bool = False,
) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner and the bound port (``port=0`` picks one)."""
    app = build_app(config, access_log=access_log)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        keepalive_timeout=config.server.header_timeout,
        shutdown_timeout=30.0,
        max_line_size=16 * 1024,
        max_field_size=16 * 1024,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.host,
        config.port if port is None else port,
        backlog=1024,
        reuse_port=reuse_port or None,
    )
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else config.port
    return runner, int(bound)


def run_server(
    config: Config, *, on_ready: Callable[[int], None] | None = None, reuse_port: bool = False
) -> None:
    """Run until SIGINT/SIGTERM (or, in a worker, until the supervisor is gone); in-flight
    requests get up to 30 s to finish. SIGHUP is logged and ignored: no reload yet."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        asyncio.run(_serve(config, on_ready, reuse_port))
    else:
        uvloop.run(_serve(config, on_ready, reuse_port))


async def _serve(config: Config, on_ready: Callable[[int], None] | None, reuse_port: bool) -> None:
    t0 = time.perf_counter()
    runner, port = await start_server(config, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)  # logged, never a stop: no reload yet
    watch_supervisor(loop, stop.set)  # a worker drains and exits once its supervisor is gone
    gc.collect()
    gc.freeze()  # the start-up heap never needs scanning again: shorter GC pauses
    if on_ready:
        on_ready(port)
    else:
        ms = (time.perf_counter() - t0) * 1000
        # One write per line: the workers of `--workers N` share this stderr.
        sys.stderr.write(f"qiao {__version__} ready on http://{config.host}:{port} ({ms:.0f} ms)\n")
    await stop.wait()
    await runner.cleanup()
