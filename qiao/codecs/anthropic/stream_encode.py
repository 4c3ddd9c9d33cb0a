"""Canonical stream events -> Anthropic SSE (protocols.md §3.4), for Anthropic clients.

Content blocks are sequential: a block opens when the kind of content changes (thinking, text,
a tool call) and closes when the next opens or the stream ends. ``Finish`` and ``UsageEvent``
are remembered and sent in the final ``message_delta`` by :meth:`StreamEncoder.close`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import orjson

from ...canonical import (
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    Request,
    StreamError,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from ...errors import UpstreamProtocolError
from . import _wire as w
from ._maps import stop_reason_out, usage_out
from .errors import stream_error_body
from .response import message_id

_OpenBlock = w.TextBlock | w.ThinkingBlock | w.RedactedThinkingBlock | w.ToolUseBlock


def sse(event: str, payload: Mapping[str, object]) -> bytes:
    """One SSE event; the ``event:`` line is required (the SDK drops events without one)."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class StreamEncoder:
    __slots__ = (
        "_block",
        "_call",
        "_ended",
        "_index",
        "_model",
        "_reason",
        "_signed",
        "_started",
        "_stop_sequence",
        "_usage",
    )

    def __init__(self, request: Request) -> None:
        self._model = request.model  # used when the stream names no model
        self._started = False
        self._ended = False
        self._block: str | None = None  # type of the open content block
        self._index = -1  # Anthropic index of the newest block
        self._call: int | None = None  # call_index of the open tool_use block
        self._signed = False  # the open thinking block got its signature
        self._reason: FinishReason | None = None
        self._stop_sequence: str | None = None
        self._usage: Usage | None = None

    def feed(self, event: Event) -> bytes:
        """SSE bytes for one event. A ``StreamError`` is :meth:`fail`; events of choices other
        than 0 are ignored (Anthropic has one)."""
        if self._ended:
            return b""
        match event:
            case StreamError():
                return self.fail(event)
            case StreamStart():
                return self._start(event)
            case UsageEvent():
                self._usage = event.usage
                return b""
        if event.index != 0:
            return b""
        head = b"" if self._started else self._start(None)
        return head + b"".join(self._content(event))

    def close(self) -> bytes:
        """The proper end: close the open block, ``message_delta``, ``message_stop``."""
        if self._ended:
            return b""
        out = [b"" if self._started else self._start(None), *self._close_block()]
        self._ended = True
        stop = self._stop_sequence if self._reason == "stop" else None
        delta = w.StopDelta(stop_reason=stop_reason_out(self._reason, stop), stop_sequence=stop)
        end = w.MessageDeltaEvent(type="message_delta", delta=delta, usage=usage_out(self._usage))
        out += [
            sse("message_delta", end),
            sse("message_stop", w.MessageStopEvent(type="message_stop")),
        ]
        return b"".join(out)

    def fail(self, err: StreamError) -> bytes:
        """Anthropic's mid-stream error event; the stream ends with it."""
        if self._ended:
            return b""
        self._ended = True
        return sse("error", stream_error_body(err))

    # ------------------------------------------------------------------------- internals

    def _start(self, event: StreamStart | None) -> bytes:
        if self._started:
            return b""
        self._started = True
        if event is not None and self._usage is None:
            self._usage = event.usage
        message = w.MessageBody(
            id=message_id(event.id if event is not None else ""),
            type="message",
            role="assistant",
            model=event.model if event is not None and event.model else self._model,
            content=[],
            stop_reason=None,
            stop_sequence=None,
            usage=usage_out(self._usage),
        )
        return sse("message_start", w.MessageStartEvent(type="message_start", message=message))

    def _content(self, event: Event) -> list[bytes]:
        match event:
            case TextDelta():
                return self._text(event)
            case ReasoningDelta():
                return self._reasoning(event)
            case ToolCallStart():
                tool_id = event.id or "toolu_" + uuid.uuid4().hex
                block = w.ToolUseBlock(type="tool_use", id=tool_id, name=event.name, input={})
                out = self._open(block)
                self._call = event.call_index
                return out
            case ToolCallDelta():
                return self._arguments(event)
            case Finish():
                self._reason, self._stop_sequence = event.reason, event.stop_sequence
        return []

    def _text(self, event: TextDelta) -> list[bytes]:
        if not event.text:
            return []
        out = [] if self._block == "text" else self._open(w.TextBlock(type="text", text=""))
        return [*out, self._delta(w.TextDelta(type="text_delta", text=event.text))]

    def _reasoning(self, event: ReasoningDelta) -> list[bytes]:
        out: list[bytes] = []
        if event.redacted is not None:
            block = w.RedactedThinkingBlock(type="redacted_thinking", data=event.redacted)
            out += [*self._open(block), *self._close_block()]
        if event.text:
            if self._block != "thinking" or self._signed:  # a signature ends a thinking block
                out += self._open(w.ThinkingBlock(type="thinking", thinking="", signature=""))
            out.append(self._delta(w.ThinkingDelta(type="thinking_delta", thinking=event.text)))
        if event.signature:
            if self._block != "thinking":
                out += self._open(w.ThinkingBlock(type="thinking", thinking="", signature=""))
            out.append(
                self._delta(w.SignatureDelta(type="signature_delta", signature=event.signature))
            )
            self._signed = True
        return out

    def _arguments(self, event: ToolCallDelta) -> list[bytes]:
        if not event.arguments:
            return []
        if self._block != "tool_use" or self._call != event.call_index:
            raise UpstreamProtocolError(
                f"tool call {event.call_index} continued after another content block began; "
                "an Anthropic stream cannot interleave tool calls"
            )
        return [
            self._delta(w.InputJsonDelta(type="input_json_delta", partial_json=event.arguments))
        ]

    def _open(self, block: _OpenBlock) -> list[bytes]:
        out = self._close_block()
        self._index += 1
        self._block = block["type"]
        self._signed = False
        start = w.ContentBlockStartEvent(
            type="content_block_start", index=self._index, content_block=block
        )
        return [*out, sse("content_block_start", start)]

    def _close_block(self) -> list[bytes]:
        if self._block is None:
            return []
        self._block = self._call = None
        stop = w.ContentBlockStopEvent(type="content_block_stop", index=self._index)
        return [sse("content_block_stop", stop)]

    def _delta(
        self, delta: w.TextDelta | w.ThinkingDelta | w.SignatureDelta | w.InputJsonDelta
    ) -> bytes:
        event = w.ContentBlockDeltaEvent(type="content_block_delta", index=self._index, delta=delta)
        return sse("content_block_delta", event)
