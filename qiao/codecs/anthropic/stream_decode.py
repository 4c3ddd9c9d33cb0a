"""Anthropic SSE (protocols.md §3.4) -> canonical stream events, for Anthropic upstreams.

Bytes may be split anywhere; events end at a blank line (``\\n``, ``\\r\\n`` or ``\\r`` line
ends). At most one incomplete event is held, capped at :data:`MAX_EVENT_BYTES`. Unknown event,
block and delta types are skipped (Anthropic's versioning policy asks clients to tolerate them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ...canonical import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from ...errors import UpstreamProtocolError
from . import _check as check
from ._maps import STOP_REASON_IN, STREAM_ERROR_DEFAULT, STREAM_ERRORS, usage_in
from .blocks import json_text

MAX_EVENT_BYTES = 8 * 1024 * 1024

Json = dict[str, Any]


class StreamDecoder:
    __slots__ = ("_buf", "_calls", "_cr", "_over", "_tools", "_usage", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._cr = False  # the last chunk ended in "\r", maybe half of a "\r\n"
        self._tools: dict[int, int] = {}  # open tool_use block index -> call_index
        self._calls = 0  # tool_use blocks seen
        self._usage: Usage | None = None  # cumulative, normalised
        self._over = False  # message_stop or an error event was read
        self.done = False  # the stream ended properly (message_stop)

    def feed(self, data: bytes) -> list[Event]:
        if self._over:
            return []
        data = self._normalise(data)
        buf = self._buf
        scan = max(0, len(buf) - 1)
        buf += data
        events: list[Event] = []
        pos = 0
        while not self._over and (end := buf.find(b"\n\n", max(pos, scan))) >= 0:
            events += self._event(bytes(buf[pos:end]))
            pos = end + 2
        del buf[:pos]
        if len(buf) > MAX_EVENT_BYTES:
            raise UpstreamProtocolError(
                "Anthropic upstream sent an SSE event larger than the limit"
            )
        return events

    def _normalise(self, data: bytes) -> bytes:
        """Line ends -> ``\\n``, also when a ``\\r\\n`` is split between two chunks."""
        if self._cr and data[:1] == b"\n":
            data = data[1:]
        self._cr = data[-1:] == b"\r"
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return data

    def _event(self, raw: bytes) -> list[Event]:
        name, data = _fields(raw)
        if data is None:
            return []
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(f"Anthropic upstream sent malformed JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise UpstreamProtocolError(
                "Anthropic upstream sent an SSE event that is not an object"
            )
        kind = name if name is not None else payload.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return []
        with check.upstream(f"{kind} event"):
            return handler(self, payload)

    # ------------------------------------------------------------------------- handlers

    def _message_start(self, payload: Json) -> list[Event]:
        msg = check.obj(check.required(payload, "message", "message"), "message")
        usage = check.optional(msg, "usage", "message.usage", check.obj)
        self._usage = None if usage is None else usage_in(usage, "message.usage")
        return [
            StreamStart(
                id=check.string(check.required(msg, "id", "message.id"), "message.id"),
                model=check.string(check.required(msg, "model", "message.model"), "message.model"),
                usage=self._usage,
            )
        ]

    def _block_start(self, payload: Json) -> list[Event]:
        index = check.integer(check.required(payload, "index", "index"), "index")
        block = check.obj(
            check.required(payload, "content_block", "content_block"), "content_block"
        )
        kind = block.get("type")
        if kind == "tool_use":
            return self._tool_start(index, block)
        if kind == "text":
            text = _string(block, "text", "content_block")
            return [TextDelta(text)] if text else []
        if kind == "thinking":
            text = _string(block, "thinking", "content_block")
            signature = _string(block, "signature", "content_block")
            return [ReasoningDelta(text, signature or None)] if text or signature else []
        if kind == "redacted_thinking":
            data = check.string(
                check.required(block, "data", "content_block.data"), "content_block.data"
            )
            return [ReasoningDelta(redacted=data)]
        return []

    def _tool_start(self, index: int, block: Json) -> list[Event]:
        call = self._calls
        self._calls += 1
        self._tools[index] = call
        tool_id = check.string(check.required(block, "id", "content_block.id"), "content_block.id")
        name = check.string(
            check.required(block, "name", "content_block.name"), "content_block.name"
        )
        events: list[Event] = [ToolCallStart(tool_id, name, call_index=call)]
        arguments = check.optional(block, "input", "content_block.input", check.obj)
        if arguments:  # normally {} with the input streamed as input_json_delta
            events.append(ToolCallDelta(json_text(arguments, "content_block.input"), call))
        return events

    def _block_delta(self, payload: Json) -> list[Event]:
        index = check.integer(check.required(payload, "index", "index"), "index")
        delta = check.obj(check.required(payload, "delta", "delta"), "delta")
        kind = delta.get("type")
        if kind == "text_delta":
            text = _string(delta, "text", "delta")
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            fragment = _string(delta, "partial_json", "delta")
            call = self._tools.get(index)
            return [ToolCallDelta(fragment, call)] if fragment and call is not None else []
        if kind == "thinking_delta":
            text = _string(delta, "thinking", "delta")
            return [ReasoningDelta(text)] if text else []
        if kind == "signature_delta":
            signature = _string(delta, "signature", "delta")
            return [ReasoningDelta(signature=signature)] if signature else []
        return []

    def _block_stop(self, payload: Json) -> list[Event]:
        self._tools.pop(check.integer(check.required(payload, "index", "index"), "index"), None)
        return []

    def _message_delta(self, payload: Json) -> list[Event]:
        delta = check.optional(payload, "delta", "delta", check.obj) or {}
        reason = check.optional(delta, "stop_reason", "delta.stop_reason", check.string)
        stop_sequence = check.optional(delta, "stop_sequence", "delta.stop_sequence", check.string)
        usage = check.optional(payload, "usage", "usage", check.obj)
        events: list[Event] = []
        if reason is not None:
            events.append(Finish(STOP_REASON_IN.get(reason, "stop"), stop_sequence=stop_sequence))
        if usage is not None:
            self._usage = usage_in(usage, "usage", prior=self._usage)
            events.append(UsageEvent(self._usage))
        return events

    def _message_stop(self, payload: Json) -> list[Event]:
        self._over = self.done = True
        return []

    def _error(self, payload: Json) -> list[Event]:
        self._over = True
        error = check.optional(payload, "error", "error", check.obj) or {}
        kind = check.optional(error, "type", "error.type", check.string) or "api_error"
        message = check.optional(error, "message", "error.message", check.string)
        status, canonical_type = STREAM_ERRORS.get(kind, STREAM_ERROR_DEFAULT)
        text = message or f"Anthropic upstream stream error: {kind}"
        return [StreamError(text, status=status, type=canonical_type, code=kind)]


_HANDLERS: dict[str, Callable[[StreamDecoder, Json], list[Event]]] = {
    "message_start": StreamDecoder._message_start,
    "content_block_start": StreamDecoder._block_start,
    "content_block_delta": StreamDecoder._block_delta,
    "content_block_stop": StreamDecoder._block_stop,
    "message_delta": StreamDecoder._message_delta,
    "message_stop": StreamDecoder._message_stop,
    "error": StreamDecoder._error,
}  # everything else (ping, future types) is skipped


def _fields(raw: bytes) -> tuple[str | None, bytes | None]:
    """(event name, data) of one SSE event; comments and other fields are ignored."""
    name: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        field, _, value = line.partition(b":")
        value = value[1:] if value[:1] == b" " else value
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            data.append(value)
    return name, b"\n".join(data) if data else None


def _string(body: Json, key: str, param: str) -> str:
    return check.optional(body, key, f"{param}.{key}", check.string) or ""
