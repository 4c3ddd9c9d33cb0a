"""What every surface shares: auth, body reading, the engine call, relaying, error rendering.

A surface subclass knows its wire format: how to turn an HTTP request into an
:class:`~qiao.exchange.Exchange` and how its errors look. Everything else is here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..auth import Principal
from ..engine import Engine, require_object
from ..errors import QiaoError, Unavailable, UpstreamStatusError
from ..exchange import Exchange
from ..jsonutil import loads_strict
from ..modelname import check_model_name
from ..observability.accesslog import RequestRecord
from ..policies.gate import Pass
from ..policies.limits import RateLimited
from ..providers.presets import WireProtocol
from ..storage.base import StorageUnavailable
from .http import new_request_id, qiao_headers, read_body, require_json
from .relay import relay_body, relay_stream

__all__ = ["Surface"]

log = logging.getLogger("qiao.surface")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Surface:
    protocol: WireProtocol

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._max_body = engine.config.server.max_body_bytes
        self._body_timeout = engine.config.server.body_timeout

    # ------------------------------------------------------------------ errors
    def error_payload(self, err: QiaoError) -> tuple[int, bytes]:
        """Status and body of ``err`` in this surface's wire format."""
        raise NotImplementedError

    def error_response(self, err: QiaoError, rec: RequestRecord) -> web.Response:
        rec.status = err.status
        rec.error = err.code or err.type
        overhead = time.perf_counter() - rec.started - rec.upstream_s
        headers = qiao_headers(rec.request_id, err.provider, overhead)
        if isinstance(err, RateLimited):
            headers.update(err.headers())
        elif err.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
        elif err.status == 503:
            headers["Retry-After"] = "1"
        status, body = self.error_payload(err)
        if (
            isinstance(err, UpstreamStatusError)
            and err.protocol == self.protocol
            and err.status == err.upstream_status
            and _is_json_object(err.body)
        ):
            body = err.body  # the upstream's own error, already scrubbed
        rec.status = status
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )

    # ------------------------------------------------------------------ the pipeline
    def record(self, request: web.Request) -> RequestRecord:
        return RequestRecord(new_request_id(), request.method, request.path, time.perf_counter())

    async def run(
        self,
        request: web.Request,
        build: Callable[[bytes, dict[str, Any]], Exchange],
        answer_locally: Callable[[Exchange], dict[str, Any] | None] | None = None,
    ) -> web.StreamResponse:
        """Authenticate, read the body, build the exchange, open upstream, relay."""
        rec = self.record(request)
        admitted: Pass | None = None
        relaying = False
        try:
            principal = self.authenticate(request, rec)
            require_json(request)
            raw = await read_body(request, self._max_body, self._body_timeout)
            ex = build(raw, require_object(loads_strict(raw)))
            rec.model = ex.model
            check_model_name(ex.model)
            rec.stream = ex.stream
            self.engine.keys.check_model(principal, ex.model)
            if answer_locally is not None:
                local = answer_locally(ex)
                if local is not None:
                    rec.status = 200
                    return self.json(local, rec)
            routes = self.engine.router.resolve(ex.model)
            admitted = await self.engine.gate.admit(
                principal, ex.model, routes[0].model, len(raw), ex.body
            )
            opened = await self.engine.open(ex, rec, routes)
            relaying = True
            if ex.stream:
                return await relay_stream(request, ex, opened, rec)
            return await relay_body(request, ex, opened, rec)
        except QiaoError as err:
            return self.error_response(err, rec)
        except asyncio.CancelledError:
            rec.status = 499
            rec.error = "client_closed"
            raise
        except StorageUnavailable:  # a store call outside the degraded paths: say so, honestly
            down = Unavailable("The database is unavailable; try again shortly.")
            return self.error_response(down, rec)
        except Exception:
            if relaying:  # the answer may have begun: nothing else can be sent
                raise
            # A bug: the caller gets a 500 in its own protocol (never aiohttp's plain text,
            # never the exception's text), the log gets the trace and the request id.
            log.exception("unexpected error in %s (%s)", request.path, rec.request_id)
            return self.error_response(QiaoError("Internal error.", code="internal_error"), rec)
        finally:
            self.engine.finish(rec)
            if admitted is not None:
                self.engine.gate.release(admitted, rec)
            self.engine.access_log.write(rec, time.perf_counter())

    def authenticate(self, request: web.Request, rec: RequestRecord) -> Principal:
        return self.engine.keys.authenticate_request(
            request.headers, request.query, request.remote, rec
        )

    async def simple(
        self, request: web.Request, produce: Callable[[Principal, RequestRecord], web.Response]
    ) -> web.Response:
        """An endpoint answered by Qiao itself (model lists): auth, log, errors."""
        rec = self.record(request)
        try:
            response = produce(self.authenticate(request, rec), rec)
            rec.status = response.status
            return response
        except QiaoError as err:
            return self.error_response(err, rec)
        finally:
            self.engine.access_log.write(rec, time.perf_counter())

    def json(self, obj: Any, rec: RequestRecord, provider: str | None = None) -> web.Response:
        overhead = time.perf_counter() - rec.started - rec.upstream_s
        headers = qiao_headers(rec.request_id, provider, overhead)
        return web.Response(
            body=orjson.dumps(obj), content_type="application/json", headers=headers
        )


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False
