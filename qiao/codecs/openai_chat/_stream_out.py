"""Canonical stream events → ``chat.completion.chunk`` SSE for an OpenAI client."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import orjson

from ...canonical import (
    Event,
    Finish,
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
from ._common import WireUsage, chat_id, now, tool_call_out, usage_out

__all__ = ["StreamEncoder"]

_DONE = b"data: [DONE]\n\n"


class _Choice(TypedDict):
    index: int
    delta: dict[str, Any]
    logprobs: None
    finish_reason: str | None


class _Chunk(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    usage: NotRequired[WireUsage | None]


class StreamEncoder:
    """Turns canonical events into chat.completion.chunk SSE bytes (protocols.md §2.4).

    Every chunk has the same id, created and model; each choice opens with a
    ``{"role": "assistant", "content": ""}`` delta. When the client asked for
    ``stream_options.include_usage``, every chunk carries ``"usage": null`` and
    :meth:`close` sends the ``choices: []`` usage chunk before ``[DONE]``.
    """

    __slots__ = ("_closed", "_created", "_id", "_model", "_n", "_opened", "_usage", "_with_usage")

    def __init__(self, request: Request) -> None:
        self._id = ""
        self._created = 0
        self._model = request.model
        self._n = max(1, request.n)
        self._with_usage = request.stream_usage
        self._opened: set[int] = set()
        self._usage: Usage | None = None
        self._closed = False

    def feed(self, event: Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, StreamStart):
            return self._start(event)
        if isinstance(event, UsageEvent):
            self._usage = event.usage
            return b""
        if isinstance(event, StreamError):
            return self.fail(event)
        index, delta, finish = _delta(event)
        if delta is None and finish is None:
            return b""
        return self._open(index) + self._chunk(index, delta or {}, finish)

    def close(self) -> bytes:
        """The proper end: the usage chunk if asked for, then ``[DONE]``."""
        if self._closed:
            return b""
        out = self._open(0)
        self._closed = True
        if self._with_usage and self._usage is not None:
            out += self._sse({**self._head(), "choices": [], "usage": usage_out(self._usage)})
        return out + _DONE

    def fail(self, err: StreamError) -> bytes:
        """A mid-stream error: the OpenAI SDK raises ``APIError`` on it. Nothing follows."""
        self._closed = True
        error = {"message": err.message, "type": err.type, "param": None, "code": err.code}
        return b"data: " + orjson.dumps({"error": error}) + b"\n\n"

    # ------------------------------------------------------------------------- internals

    def _start(self, event: StreamStart) -> bytes:
        if self._opened:  # a second start (a retried upstream) must not change the ids
            return b""
        self._id = chat_id(event.id)
        self._created = event.created or now()
        self._model = event.model or self._model
        self._usage = event.usage
        return self._open(0)

    def _open(self, index: int) -> bytes:
        """The role chunks owed before anything for ``index``: all of 0..n-1 at once, so the
        SDK's accumulator (which appends choices in arrival order) sees them in order."""
        if index in self._opened:
            return b""
        if not self._id:
            self._id, self._created = chat_id(None), now()
        out = b""
        for i in (*range(self._n), index):
            if i not in self._opened:
                self._opened.add(i)
                out += self._chunk(i, {"role": "assistant", "content": ""}, None)
        return out

    def _head(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None) -> bytes:
        chunk: _Chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }
        if self._with_usage:
            chunk["usage"] = None
        return self._sse(chunk)

    @staticmethod
    def _sse(payload: object) -> bytes:
        return b"data: " + orjson.dumps(payload) + b"\n\n"


def _delta(event: Event) -> tuple[int, dict[str, Any] | None, str | None]:
    """``(choice index, delta or None, finish_reason or None)`` of a content event."""
    if isinstance(event, TextDelta):
        return event.index, {"content": event.text} if event.text else None, None
    if isinstance(event, ReasoningDelta):
        # Signatures and redacted reasoning have no chat.completions form: dropped.
        return event.index, {"reasoning_content": event.text} if event.text else None, None
    if isinstance(event, ToolCallStart):
        call = ToolCall(event.id, event.name, "", event.signature)
        wire: dict[str, Any] = {"index": event.call_index, **tool_call_out(call)}
        return event.index, {"tool_calls": [wire]}, None
    if isinstance(event, ToolCallDelta):
        if not event.arguments:
            return event.index, None, None
        fragment = {"index": event.call_index, "function": {"arguments": event.arguments}}
        return event.index, {"tool_calls": [fragment]}, None
    if isinstance(event, Finish):
        # "error" is not in OpenAI's vocabulary; it is passed on as OpenRouter does.
        return event.index, None, event.reason
    return 0, None, None
