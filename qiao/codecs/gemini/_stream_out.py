"""Canonical stream events → Gemini SSE for a Gemini client.

Every event is ``data: <GenerateContentResponse>\\r\\n\\r\\n`` (with the space; never a comment
line: google-genai breaks on both). Text and thoughts go out as they come. A function call goes
out whole in one chunk, so its fragments are held until the next call, text, finish or the end
(memory: one call). finishReason and usageMetadata ride on the final chunk, sent by ``close``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, TypedDict

import orjson

from ...canonical import (
    Event,
    Finish,
    FinishReason,
    Reasoning,
    ReasoningDelta,
    Request,
    StreamError,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from ...errors import UpstreamProtocolError
from ._common import GUsage, error_payload, usage_out
from ._parts_out import GPart, answer_part, call_part
from ._response import GCandidate, candidate, new_response_id

MAX_CALL_BYTES: Final = 8 * 1024 * 1024
_SEP: Final = b"\r\n\r\n"


class _GChunk(TypedDict, total=False):
    candidates: list[GCandidate]
    usageMetadata: GUsage
    modelVersion: str
    responseId: str


@dataclass(slots=True)
class _Call:
    start: ToolCallStart
    fragments: list[str] = field(default_factory=list)
    size: int = 0

    def part(self) -> GPart:
        s = self.start
        return call_part(ToolCall(s.id, s.name, "".join(self.fragments)), s.signature)


class StreamEncoder:
    __slots__ = ("_calls", "_closed", "_finish", "_id", "_model", "_seen", "_tail", "_usage")

    def __init__(self, request: Request) -> None:
        self._model = request.model
        self._id = ""
        self._calls: dict[int, _Call] = {}  # the call being received, per candidate
        self._tail: dict[int, list[GPart]] = {}  # calls complete at Finish: go with the end
        self._finish: dict[int, FinishReason] = {}
        self._seen: set[int] = set()
        self._usage: Usage | None = None
        self._closed = False

    def feed(self, event: Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, StreamError):
            return self.fail(event)
        if isinstance(event, StreamStart):
            self._id = event.id
            self._model = event.model or self._model
            self._usage = event.usage or self._usage
            return b""
        if isinstance(event, UsageEvent):
            self._usage = event.usage
            return b""
        self._seen.add(event.index)
        if isinstance(event, TextDelta | ReasoningDelta):
            return self._content(event)
        if isinstance(event, ToolCallStart):
            out = self._flush(event.index)
            self._calls[event.index] = _Call(event)
            return out
        if isinstance(event, ToolCallDelta):
            self._arguments(event)
            return b""
        assert isinstance(event, Finish)
        self._finish[event.index] = event.reason
        call = self._calls.pop(event.index, None)
        if call is not None:
            self._tail.setdefault(event.index, []).append(call.part())
        return b""

    def close(self) -> bytes:
        """The final chunk: calls still held, every candidate's finishReason, the usage."""
        if self._closed:
            return b""
        self._closed = True
        for index, call in self._calls.items():
            self._tail.setdefault(index, []).append(call.part())
        self._calls.clear()
        cands = []
        for index in sorted(self._seen | set(self._finish)) or [0]:
            cand = candidate(index, [], self._finish.get(index, "stop"))
            cand["content"]["parts"] = self._tail.get(index, [])
            cands.append(cand)
        chunk = self._envelope(cands)
        if self._usage is not None:
            chunk["usageMetadata"] = usage_out(self._usage)
        return _frame(chunk)

    def fail(self, err: StreamError) -> bytes:
        """``data: {"error": {...}}``: google-genai raises APIError on it."""
        self._closed = True
        return b"data: " + orjson.dumps(error_payload(err.status, err.message)) + _SEP

    def _content(self, event: TextDelta | ReasoningDelta) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            part: GPart | None = GPart(text=event.text)
        elif not (event.text or event.signature or event.redacted):
            return b""
        else:
            part = answer_part(Reasoning(event.text, event.signature, event.redacted))
        assert part is not None
        return self._flush(event.index) + self._parts(event.index, [part])

    def _arguments(self, event: ToolCallDelta) -> None:
        call = self._calls.get(event.index)
        if call is None or call.start.call_index != event.call_index:
            raise UpstreamProtocolError("tool call arguments arrived outside their tool call")
        call.size += len(event.arguments)
        if call.size > MAX_CALL_BYTES:
            raise UpstreamProtocolError("a tool call's arguments exceed the size limit")
        call.fragments.append(event.arguments)

    def _flush(self, index: int) -> bytes:
        call = self._calls.pop(index, None)
        return b"" if call is None else self._parts(index, [call.part()])

    def _parts(self, index: int, parts: list[GPart]) -> bytes:
        cand = candidate(index, [], None)
        cand["content"]["parts"] = parts
        return _frame(self._envelope([cand]))

    def _envelope(self, cands: list[GCandidate]) -> _GChunk:
        if not self._id:
            self._id = new_response_id()
        return _GChunk(candidates=cands, modelVersion=self._model, responseId=self._id)


def _frame(chunk: _GChunk) -> bytes:
    return b"data: " + orjson.dumps(chunk) + _SEP
