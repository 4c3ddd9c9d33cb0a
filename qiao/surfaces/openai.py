"""The OpenAI surface: /v1/chat/completions, /completions, /embeddings, /responses, /models.

To an OpenAI-type provider this is a passthrough: the caller's JSON goes up
with only what must change changed, the answer comes back as it was plus our
headers, and SSE events are relayed as they arrive.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from ..auth import credential_from
from ..engine import Engine, Opened, require_object
from ..errors import InvalidRequest, NotFound, QiaoError, UpstreamError, UpstreamStatusError
from ..jsonutil import loads_strict
from ..observability.accesslog import RequestRecord
from ..providers.openai import Op
from ..providers.openai_stream import OpenAIStreamRelay
from ..providers.reasoning import StreamReasoning
from .http import new_request_id, qiao_headers, read_body

__all__ = ["OpenAISurface", "error_body"]

_JSON = "application/json"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_PASSED_RESPONSE_HEADERS = ("openai-processing-ms",)


def error_body(err: QiaoError) -> bytes:
    payload = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    return orjson.dumps({"error": payload})


def _validate(op: Op, body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    if op is Op.CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise InvalidRequest("Each message must be an object.", param="messages")
    elif op is Op.COMPLETIONS and "prompt" not in body:
        raise InvalidRequest("'prompt' is required.", param="prompt")
    elif op is Op.EMBEDDINGS:
        if not isinstance(body.get("input"), str | list):
            raise InvalidRequest("'input' must be a string or an array.", param="input")
        if stream:
            raise InvalidRequest("Embeddings cannot be streamed.", param="stream")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise InvalidRequest("'n' must be an integer between 1 and 128.", param="n")
    return model


class OpenAISurface:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._max_body = engine.config.server.max_body_bytes
        self._body_timeout = engine.config.server.body_timeout

    def routes(self, prefix: str = "/v1") -> list[web.RouteDef]:
        return [
            web.post(f"{prefix}/chat/completions", self.chat_completions),
            web.post(f"{prefix}/completions", self.completions),
            web.post(f"{prefix}/embeddings", self.embeddings),
            web.post(f"{prefix}/responses", self.responses),
            web.get(f"{prefix}/models", self.list_models),
            web.get(prefix + "/models/{model:.+}", self.get_model),
        ]

    def azure_routes(self) -> list[web.RouteDef]:
        """Azure OpenAI classic paths, so ``AzureOpenAI`` clients can point at Qiao."""
        base = "/openai/deployments/{deployment}"
        return [
            web.post(f"{base}/chat/completions", self.chat_completions),
            web.post(f"{base}/completions", self.completions),
            web.post(f"{base}/embeddings", self.embeddings),
        ]

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, Op.CHAT)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, Op.COMPLETIONS)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, Op.EMBEDDINGS)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, Op.RESPONSES)

    # ----------------------------------------------------------------- errors
    def error_response(self, err: QiaoError, rec: RequestRecord) -> web.Response:
        rec.status = err.status
        rec.error = err.code or err.type
        headers = qiao_headers(rec.request_id, err.provider, self._overhead(rec))
        if err.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(err.retry_after)))
        elif err.status == 503:
            headers["Retry-After"] = "1"
        if isinstance(err, UpstreamStatusError) and err.status == err.upstream_status:
            body = err.body if _is_openai_error(err.body) else error_body(err)
        else:
            body = error_body(err)
        return web.Response(status=err.status, body=body, content_type=_JSON, headers=headers)

    @staticmethod
    def _overhead(rec: RequestRecord) -> float:
        return time.perf_counter() - rec.started - rec.upstream_s

    # ----------------------------------------------------------------- forwarding
    async def _forward(self, request: web.Request, op: Op) -> web.StreamResponse:
        rec = RequestRecord(new_request_id(), request.method, request.path, time.perf_counter())
        try:
            return await self._forward_inner(request, op, rec)
        except QiaoError as err:
            return self.error_response(err, rec)
        except asyncio.CancelledError:
            rec.status = 499
            rec.error = "client_closed"
            raise
        finally:
            self.engine.access_log.write(rec, time.perf_counter())

    async def _forward_inner(
        self, request: web.Request, op: Op, rec: RequestRecord
    ) -> web.StreamResponse:
        presented = credential_from(request.headers, request.query)
        engine = self.engine
        principal = engine.keys.authenticate(presented)  # fail fast, before reading a body
        rec.key = principal.name
        raw = await read_body(request, self._max_body, self._body_timeout)
        body = require_object(loads_strict(raw))
        deployment = request.match_info.get("deployment")
        if deployment is not None and body.get("model") != deployment:
            body = {**body, "model": deployment}  # Azure: the path names the model
            raw = orjson.dumps(body)
        rec.model = _validate(op, body)
        rec.stream = body.get("stream") is True
        engine.keys.check_model(principal, rec.model)
        opened = await engine.open(op, raw, body, request.headers, rec)
        if rec.stream:
            return await self._relay_stream(request, op, opened, rec)
        return await self._relay_body(opened, rec)

    async def _relay_body(self, opened: Opened, rec: RequestRecord) -> web.Response:
        t0 = time.perf_counter()
        try:
            data = await opened.response.read()
        except UpstreamError as err:
            err.provider = err.provider or opened.route.upstream.name
            raise
        finally:
            rec.upstream_s += time.perf_counter() - t0
        obj = _parse_answer(data)
        rec.usage = _usage_of(obj)
        memory = opened.route.upstream.reasoning
        if memory is not None and obj is not None:
            memory.learn_from_response(obj)
        rec.status = opened.response.status
        headers = qiao_headers(rec.request_id, opened.route.upstream.name, self._overhead(rec))
        self._pass_headers(opened, headers)
        content_type = opened.response.headers.get("Content-Type", _JSON)
        headers["Content-Type"] = content_type
        return web.Response(status=rec.status, body=data, headers=headers)

    @staticmethod
    def _pass_headers(opened: Opened, headers: dict[str, str]) -> None:
        upstream = opened.response.headers
        rid = upstream.get("x-request-id")
        if rid:
            headers["x-qiao-upstream-request-id"] = rid
        for name in _PASSED_RESPONSE_HEADERS:
            value = upstream.get(name)
            if value is not None:
                headers[name] = value

    async def _relay_stream(
        self, request: web.Request, op: Op, opened: Opened, rec: RequestRecord
    ) -> web.StreamResponse:
        memory = opened.route.upstream.reasoning
        relay = OpenAIStreamRelay(
            strip_usage=not opened.client_wants_usage,
            responses=op is Op.RESPONSES,
            observer=StreamReasoning(memory) if memory is not None and op is Op.CHAT else None,
        )
        headers = qiao_headers(rec.request_id, opened.route.upstream.name, self._overhead(rec))
        self._pass_headers(opened, headers)
        headers.update(_SSE_HEADERS)
        resp = web.StreamResponse(status=200, headers=headers)
        upstream = opened.response
        rec.status = 200
        try:
            await resp.prepare(request)
            rec.first_byte_s = time.perf_counter() - rec.started
            await self._pump(resp, relay, opened, rec)
            await resp.write_eof()
        except ConnectionResetError:
            rec.status = 499
            rec.error = "client_closed"
        finally:
            upstream.close()
            rec.usage = relay.usage
        return resp

    async def _pump(
        self, resp: web.StreamResponse, relay: OpenAIStreamRelay, opened: Opened, rec: RequestRecord
    ) -> None:
        try:
            async for chunk in opened.response.iter_chunks():
                out = relay.feed(chunk)
                if out:
                    await resp.write(out)
                if relay.failed:
                    break
        except UpstreamError as err:
            rec.error = err.code or "upstream_error"
            await resp.write(relay.error_event(err.message, err.code or "upstream_error"))
            return
        if relay.failed:
            rec.error = "upstream_protocol_error"
            await resp.write(relay.error_event(relay.failed, "upstream_protocol_error"))
        elif not relay.done and not relay.error:
            rec.error = "upstream_truncated"
            msg = "upstream closed the stream before it was complete"
            await resp.write(relay.error_event(msg, "upstream_truncated"))
        if relay.error:
            rec.error = "upstream_stream_error"

    # ----------------------------------------------------------------- models
    async def list_models(self, request: web.Request) -> web.Response:
        rec = RequestRecord(new_request_id(), request.method, request.path, time.perf_counter())
        try:
            principal = self.engine.keys.authenticate(
                credential_from(request.headers, request.query)
            )
            rec.key = principal.name
            data = [
                _model_object(alias, self.engine.router.resolve(alias)[0].upstream.name)
                for alias in self.engine.router.aliases
                if principal.allows(alias)
            ]
            rec.status = 200
            body = orjson.dumps({"object": "list", "data": data})
            headers = qiao_headers(rec.request_id, None, self._overhead(rec))
            return web.Response(body=body, content_type=_JSON, headers=headers)
        except QiaoError as err:
            return self.error_response(err, rec)
        finally:
            self.engine.access_log.write(rec, time.perf_counter())

    async def get_model(self, request: web.Request) -> web.Response:
        rec = RequestRecord(new_request_id(), request.method, request.path, time.perf_counter())
        model = request.match_info["model"]
        try:
            principal = self.engine.keys.authenticate(
                credential_from(request.headers, request.query)
            )
            rec.key = principal.name
            if not principal.allows(model):
                raise NotFound(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    param="model",
                    code="model_not_found",
                )
            route = self.engine.router.resolve(model)[0]
            rec.status = 200
            headers = qiao_headers(rec.request_id, route.upstream.name, self._overhead(rec))
            return web.Response(
                body=orjson.dumps(_model_object(model, route.upstream.name)),
                content_type=_JSON,
                headers=headers,
            )
        except QiaoError as err:
            return self.error_response(err, rec)
        finally:
            self.engine.access_log.write(rec, time.perf_counter())


_CREATED = 1_700_000_000


def _model_object(model: str, provider: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _CREATED, "owned_by": provider}


def _parse_answer(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _usage_of(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    usage = obj.get("usage") if obj is not None else None
    return usage if isinstance(usage, dict) else None


def _is_openai_error(body: bytes) -> bool:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("error"), dict)
