"""Relaying an opened upstream answer to the client: as is, or translated.

Non-streaming answers are read whole (bounded by the transport) and either passed on or
decoded by the provider's codec and encoded by the client's. Streams are relayed as they
arrive: a passthrough relay forwards whole SSE events; a translating relay feeds the
provider's stream decoder and the client's stream encoder. Either way a stream that breaks
ends with the client protocol's error event, never a clean end.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import orjson
from aiohttp import web

from ..accounting import OutputMeter
from ..canonical import Request, StreamError, StreamStart, Usage, UsageEvent
from ..codecs import embeddings
from ..codecs.registry import client_codec, codec_for
from ..engine import Opened
from ..errors import QiaoError, UpstreamError, UpstreamProtocolError
from ..exchange import Exchange
from ..observability.accesslog import RequestRecord
from ..providers.openai import Op
from ..providers.openai_stream import MAX_EVENT_BYTES, OpenAIStreamRelay
from ..providers.presets import WireProtocol
from ..providers.reasoning import EventReasoning, StreamReasoning
from ..upstream import Deadline
from .http import qiao_headers

__all__ = ["relay_body", "relay_stream", "usage_dict"]

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_PASSED_RESPONSE_HEADERS = ("openai-processing-ms",)
_TRUNCATED = "upstream closed the stream before it was complete"


def usage_dict(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def _openai_usage(raw: Any) -> dict[str, int] | None:
    """Normalise an OpenAI-shaped usage object (chat, completions, embeddings, responses)."""
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens", raw.get("input_tokens", 0)) or 0
    completion = raw.get("completion_tokens", raw.get("output_tokens", 0)) or 0
    pdet = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    cdet = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    return {
        "input_tokens": int(prompt),
        "output_tokens": int(completion),
        "cache_read_tokens": int(pdet.get("cached_tokens") or 0) if isinstance(pdet, dict) else 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": int(cdet.get("reasoning_tokens") or 0) if isinstance(cdet, dict) else 0,
    }


def _headers(opened: Opened, rec: RequestRecord) -> dict[str, str]:
    overhead = time.perf_counter() - rec.started - rec.upstream_s
    headers = qiao_headers(rec.request_id, opened.route.upstream.name, overhead)
    upstream = opened.response.headers
    rid = upstream.get("x-request-id") or upstream.get("request-id")
    if rid:
        headers["x-qiao-upstream-request-id"] = rid
    if not opened.plan.translate:
        for name in _PASSED_RESPONSE_HEADERS:
            value = upstream.get(name)
            if value is not None:
                headers[name] = value
    if opened.plan.dropped:  # a client tool the target does not run: say so, do not refuse
        headers["x-qiao-dropped-tools"] = ",".join(opened.plan.dropped)
    return headers


# --------------------------------------------------------------------------- whole bodies


async def relay_body(
    request: web.Request, ex: Exchange, opened: Opened, rec: RequestRecord
) -> web.Response:
    t0 = time.perf_counter()
    try:
        data = await opened.response.read()
    except UpstreamError as err:
        err.provider = err.provider or opened.route.upstream.name
        raise
    finally:
        rec.upstream_s += time.perf_counter() - t0
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if opened.plan.translate:
        data, rec.usage = _translate_body(ex, opened, obj)
        content_type = "application/json"
    else:
        content_type = opened.response.headers.get("Content-Type", "application/json")
        rec.usage = _passthrough_usage(opened, obj)
    memory = opened.route.upstream.reasoning
    if memory is not None and isinstance(obj, dict):
        memory.learn_from_response(obj)
    rec.status = 200 if opened.plan.translate else opened.response.status
    headers = _headers(opened, rec)
    headers["Content-Type"] = content_type
    resp = web.Response(status=rec.status, body=data, headers=headers)
    if _may_wait(request, len(data)):  # else aiohttp hands it over without waiting
        await _guarded(request, opened, rec, lambda: _send_body(request, resp, opened.deadline))
    return resp


def _may_wait(request: web.Request, size: int) -> bool:
    """Whether writing ``size`` more bytes (and headers) may wait for the client to read:
    only when the connection's write buffer would pass its high-water mark."""
    transport = request.transport
    if transport is None:
        return False
    return transport.get_write_buffer_size() + size + 16384 > transport.get_write_buffer_limits()[1]


async def _send_body(request: web.Request, resp: web.Response, d: Deadline) -> None:
    d.writing = d.loop.time()
    await resp.prepare(request)
    await resp.write_eof()


def _passthrough_usage(opened: Opened, obj: Any) -> dict[str, int] | None:
    if not isinstance(obj, dict):
        return None
    if opened.plan.upstream_protocol == "openai":
        return _openai_usage(obj.get("usage"))
    try:
        return usage_dict(codec_for(opened.plan.upstream_protocol).decode_response(obj).usage)
    except QiaoError:
        return None


def _translate_body(ex: Exchange, opened: Opened, obj: Any) -> tuple[bytes, dict[str, int] | None]:
    if not isinstance(obj, dict):
        raise UpstreamProtocolError("upstream answered with something that is not a JSON object")
    if ex.kind == "embeddings":
        if ex.protocol == "openai":
            out = embeddings.gemini_to_openai_response(obj, ex.body, ex.model)
            return orjson.dumps(out), _openai_usage(out.get("usage"))
        return orjson.dumps(embeddings.openai_to_gemini_response(obj, ex.gemini_method)), (
            _openai_usage(obj.get("usage"))
        )
    resp = codec_for(opened.plan.upstream_protocol).decode_response(obj)
    resp.model = ex.model
    client = client_codec(ex.protocol, ex.kind)
    return orjson.dumps(client.encode_response(resp, ex.canonical())), usage_dict(resp.usage)


# --------------------------------------------------------------------------- streams


async def relay_stream(
    request: web.Request, ex: Exchange, opened: Opened, rec: RequestRecord
) -> web.StreamResponse:
    headers = _headers(opened, rec)
    headers.update(_SSE_HEADERS)
    resp = web.StreamResponse(status=200, headers=headers)
    rec.status = 200

    async def send() -> None:  # all of it guarded: whatever fails, the upstream is closed
        pump: Callable[[web.StreamResponse, Opened, RequestRecord], Any]
        if opened.plan.translate:
            pump = _Translator(ex, opened).pump
        elif opened.plan.upstream_protocol == "openai":
            pump = _openai_passthrough(opened)
        else:
            pump = _Observed(ex, opened.plan.upstream_protocol).pump
        await resp.prepare(request)
        rec.first_byte_s = time.perf_counter() - rec.started
        await pump(resp, opened, rec)
        opened.deadline.writing = opened.deadline.loop.time()
        await resp.write_eof()

    await _guarded(request, opened, rec, send)
    return resp


async def _write(resp: web.StreamResponse, d: Deadline, data: bytes) -> None:
    """Every write to a client is timed: one it does not take within ``write_stall`` seconds
    ends the relay (see :class:`~qiao.upstream.Deadline`)."""
    d.writing = d.loop.time()
    await resp.write(data)
    d.writing = 0.0


async def _guarded(
    request: web.Request, opened: Opened, rec: RequestRecord, send: Callable[[], Awaitable[None]]
) -> None:
    """Run ``send``, everything written to the client, under the attempt's deadline. A client
    that stops reading is cut there: its connection aborted (closing would wait for it to
    read), the upstream connection closed, the request recorded as an error."""
    d = opened.deadline
    scope = d.relay_scope()
    try:
        async with scope:
            await send()
    except TimeoutError:
        if not scope.expired():
            raise
        rec.error = "client_stalled" if d.writing else "total_timeout"
        if request.transport is not None:
            request.transport.abort()
    except ConnectionResetError:
        rec.status = 499
        rec.error = "client_closed"
    finally:
        d.cancel()
        opened.response.close()


def _meter(opened: Opened) -> OutputMeter:
    """Where the pump counts what it relays (see :class:`~qiao.accounting.OutputMeter`)."""
    return opened.meter if opened.meter is not None else OutputMeter()


def _openai_passthrough(
    opened: Opened,
) -> Callable[[web.StreamResponse, Opened, RequestRecord], Any]:
    memory = opened.route.upstream.reasoning
    op = opened.plan.openai_op
    relay = OpenAIStreamRelay(
        strip_usage=not opened.plan.client_wants_usage,
        responses=op is Op.RESPONSES,
        observer=StreamReasoning(memory) if memory is not None and op is Op.CHAT else None,
    )

    async def pump(resp: web.StreamResponse, opened: Opened, rec: RequestRecord) -> None:
        d, meter = opened.deadline, _meter(opened)
        try:
            async for chunk in opened.response.iter_chunks():
                out = relay.feed(chunk)
                meter.chunks = relay.chunks  # what was relayed, if the upstream never says
                if out:
                    await _write(resp, d, out)
                if relay.failed:
                    break
        except UpstreamError as err:
            rec.error = err.code or "upstream_error"
            await _write(resp, d, relay.error_event(err.message, err.code or "upstream_error"))
            return
        finally:
            rec.usage = _openai_usage(relay.usage)
        if relay.failed:
            rec.error = "upstream_protocol_error"
            await _write(resp, d, relay.error_event(relay.failed, "upstream_protocol_error"))
        elif not relay.done and not relay.error:
            rec.error = "upstream_truncated"
            await _write(resp, d, relay.error_event(_TRUNCATED, "upstream_truncated"))
        if relay.error:
            rec.error = "upstream_stream_error"

    return pump


class _Observed:
    """Passthrough of an Anthropic or Gemini stream: whole events forwarded as they complete,
    while the protocol's decoder watches for usage, errors and the proper end."""

    def __init__(self, ex: Exchange, protocol: WireProtocol) -> None:
        self._codec: ModuleType = codec_for(protocol)
        self._decoder = self._codec.StreamDecoder()
        self._model = ex.model
        self._buf = b""

    async def pump(self, resp: web.StreamResponse, opened: Opened, rec: RequestRecord) -> None:
        d, meter = opened.deadline, _meter(opened)
        try:
            async for chunk in opened.response.iter_chunks():
                buf = self._buf + chunk
                cut = max(buf.rfind(b"\n\n"), buf.rfind(b"\r\n\r\n"))
                if cut < 0:
                    if len(buf) > MAX_EVENT_BYTES:  # held, unforwarded: never without bound
                        raise UpstreamProtocolError(
                            "upstream sent an SSE event larger than the limit"
                        )
                    self._buf = buf
                    continue
                end = cut + (4 if buf[cut : cut + 4] == b"\r\n\r\n" else 2)
                complete, self._buf = buf[:end], buf[end:]
                for ev in self._decoder.feed(complete):
                    if isinstance(ev, UsageEvent):
                        rec.usage = usage_dict(ev.usage)
                    elif isinstance(ev, StreamError):
                        rec.error = "upstream_stream_error"
                    else:
                        meter.event(ev)
                await _write(resp, d, complete)
        except UpstreamError as err:
            rec.error = err.code or "upstream_error"
            await _write(resp, d, self._fail(err.message, err.code, err.status))
            return
        if not self._decoder.done and rec.error is None:
            rec.error = "upstream_truncated"
            await _write(resp, d, self._fail(_TRUNCATED, "upstream_truncated", 502))

    def _fail(self, message: str, code: str | None, status: int) -> bytes:
        encoder = self._codec.StreamEncoder(Request(model=self._model))
        out: bytes = encoder.fail(StreamError(message, status=status, code=code))
        return out


class _Translator:
    def __init__(self, ex: Exchange, opened: Opened) -> None:
        self._decoder = codec_for(opened.plan.upstream_protocol).StreamDecoder()
        self._encoder = client_codec(ex.protocol, ex.kind).StreamEncoder(ex.canonical())
        self._model = ex.model
        memory = opened.route.upstream.reasoning
        self._observe = EventReasoning(memory) if memory is not None else None

    async def pump(self, resp: web.StreamResponse, opened: Opened, rec: RequestRecord) -> None:
        encoder, d, meter = self._encoder, opened.deadline, _meter(opened)
        try:
            async for chunk in opened.response.iter_chunks():
                out = []
                for ev in self._decoder.feed(chunk):
                    if isinstance(ev, StreamError):
                        rec.error = "upstream_stream_error"
                        out.append(encoder.fail(ev))
                        await _write(resp, d, b"".join(out))
                        return
                    if isinstance(ev, UsageEvent):
                        rec.usage = usage_dict(ev.usage)
                    elif isinstance(ev, StreamStart):
                        ev.model = self._model
                    if self._observe is not None:
                        self._observe(ev)
                    meter.event(ev)
                    out.append(encoder.feed(ev))
                data = b"".join(out)
                if data:
                    await _write(resp, d, data)
        except UpstreamError as err:
            rec.error = err.code or "upstream_error"
            await _write(
                resp, d, encoder.fail(StreamError(err.message, err.status, err.type, err.code))
            )
            return
        if self._decoder.done:
            await _write(resp, d, encoder.close())
        else:
            rec.error = "upstream_truncated"
            await _write(
                resp,
                d,
                encoder.fail(StreamError(_TRUNCATED, 502, "server_error", "upstream_truncated")),
            )
