"""Gemini SSE (``?alt=sse``) from an upstream → canonical stream events.

Bytes may be split anywhere; events end with a blank line (``\\r\\n\\r\\n`` like the real API, or
``\\n\\n``). Gemini streams have no terminator: the stream has ended properly (``done``) once
every candidate seen has sent its finishReason. Memory is bounded by one event.
"""

from __future__ import annotations

from typing import Final

import orjson

from ...canonical import (
    Event,
    Finish,
    Reasoning,
    ReasoningDelta,
    StreamError,
    StreamStart,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from ...errors import UpstreamProtocolError
from ._common import Node, error_type, finish_in, usage_in
from ._parts_in import IdMaker, answer_parts
from ._response import created_of, new_response_id

MAX_EVENT_BYTES: Final = 8 * 1024 * 1024


class StreamDecoder:
    __slots__ = (
        "_buf",
        "_calls",
        "_data",
        "_ended",
        "_finished",
        "_model",
        "_new_id",
        "_seen",
        "_size",
        "_started",
        "_usage",
    )

    def __init__(self, model: str = "") -> None:
        self._model = model  # used when the chunks carry no modelVersion
        self._buf = b""
        self._data: list[bytes] = []  # data lines of the event being read
        self._size = 0
        self._started = False
        self._ended = False  # an error event was read: nothing more is decoded
        self._new_id = IdMaker(new_response_id())
        self._calls: dict[int, int] = {}  # candidate index → function calls so far
        self._seen: set[int] = set()
        self._finished: set[int] = set()
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        return bool(self._seen) and self._seen <= self._finished

    def feed(self, data: bytes) -> list[Event]:
        buf = self._buf + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._buf = buf
            self._check_size()
            return []
        self._buf = buf[cut + 1 :]
        events: list[Event] = []
        for line in buf[:cut].split(b"\n"):
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                value = line[6:] if line.startswith(b"data: ") else line[5:]
                self._data.append(value)
                self._size += len(value)
                self._check_size()
            elif not line and self._data:
                payload = b"\n".join(self._data)
                self._data, self._size = [], 0
                if not self._ended:
                    events.extend(self._event(payload))
            # comments, other SSE fields and stray blank lines carry nothing
        return events

    def _check_size(self) -> None:
        if self._size + len(self._buf) > MAX_EVENT_BYTES:
            raise UpstreamProtocolError("Gemini sent a stream event larger than the limit")

    def _event(self, payload: bytes) -> list[Event]:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError("Gemini sent a malformed stream event") from None
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("Gemini sent a stream event that is not an object")
        if "error" in obj:
            self._ended = True
            return [_error(obj["error"])]
        root = Node(obj, "", UpstreamProtocolError)
        out: list[Event] = []
        if not self._started:
            out.append(self._start(root))
        cands = root.objs("candidates")
        for position, cand in enumerate(cands):
            out.extend(self._candidate(cand, position))
        feedback = root.obj("promptFeedback")
        if not cands and feedback is not None and feedback.text("blockReason"):
            self._seen.add(0)
            self._finished.add(0)
            out.append(Finish("content_filter", 0))
        meta = root.obj("usageMetadata")
        usage = usage_in(meta) if meta is not None else None
        if usage is not None and usage != self._usage:
            self._usage = usage
            out.append(UsageEvent(usage))
        return out

    def _start(self, root: Node) -> StreamStart:
        self._started = True
        rid = root.text("responseId")
        if rid:
            self._new_id = IdMaker(rid)
        return StreamStart(
            id=rid or self._new_id.base,
            model=root.text("modelVersion") or self._model,
            created=created_of(root),
        )

    def _candidate(self, cand: Node, position: int) -> list[Event]:
        found = cand.integer("index")
        index = position if found is None else found
        self._seen.add(index)
        out: list[Event] = []
        for part in answer_parts(cand.obj("content"), self._new_id):
            if isinstance(part, Text):
                out.append(TextDelta(part.text, index))
            elif isinstance(part, Reasoning):
                out.append(ReasoningDelta(part.text, part.signature, part.redacted, index))
            elif isinstance(part, ToolCall):
                n = self._calls.get(index, 0)
                self._calls[index] = n + 1
                out.append(ToolCallStart(part.id, part.name, n, index, part.signature))
                out.append(ToolCallDelta(part.arguments, n, index))
            # images and documents in an answer have no stream event: dropped
        reason = cand.text("finishReason")
        if reason:
            self._finished.add(index)
            out.append(Finish(finish_in(reason, index in self._calls) or "stop", index))
        return out


def _error(error: object) -> StreamError:
    err = error if isinstance(error, dict) else {}
    code = err.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    message = err.get("message")
    name = err.get("status")
    return StreamError(
        message=message if isinstance(message, str) and message else "Gemini stream error",
        status=status,
        type=error_type(status),
        code=name if isinstance(name, str) else None,
    )
