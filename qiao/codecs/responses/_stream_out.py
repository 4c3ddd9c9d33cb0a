"""Canonical stream events → the Responses API SSE event sequence (protocols.md §2.8, §0.14)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageEvent,
)
from ._common import item_id, now, reasoning_item, response_id, response_object, status_of
from ._response import call_item, message_item, signature_item

__all__ = ["StreamEncoder"]


@dataclass(slots=True)
class _Item:
    kind: Literal["reasoning", "message", "call"]
    id: str
    index: int  # output_index
    text: str = ""  # summary text, output text or arguments
    opened_part: bool = False  # reasoning: the summary part was announced
    signature: str | None = None
    redacted: str | None = None
    call: ToolCall | None = None
    call_index: int = 0


@dataclass(slots=True)
class _State:
    output: list[dict[str, Any]] = field(default_factory=list)  # finished items, in order
    open: list[_Item] = field(default_factory=list)  # one item, or a run of function calls


class StreamEncoder:
    """Turns canonical events into Responses SSE bytes, each ``event: <type>`` + ``data`` with
    a ``sequence_number`` counting from 0.

    ``response.created`` and ``response.in_progress`` open the stream; each output item is
    announced (``output_item.added``) before its deltas and finished (``output_item.done``)
    when content of another kind arrives or at :meth:`close`, which sends
    ``response.completed`` (``response.incomplete`` for a length or content-filter stop,
    ``response.failed`` for an "error" stop) with the whole response and usage. Reasoning text
    streams as a summary (``reasoning_summary_*``); a signature or redacted reasoning rides in
    the item's ``encrypted_content``. Function calls in a row stay open together, so argument
    deltas may interleave. Only choice 0 is streamed (the Responses API has no ``n``).
    """

    __slots__ = ("_closed", "_created", "_finish", "_id", "_model", "_request", "_seq",
                 "_started", "_state", "_usage")  # fmt: skip

    def __init__(self, request: Request) -> None:
        self._request = request
        self._id = ""
        self._created = 0
        self._model = request.model
        self._seq = 0
        self._started = False
        self._closed = False
        self._state = _State()
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None

    # ------------------------------------------------------------------------- public

    def feed(self, event: Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, StreamStart):
            if self._started:  # a second start (a retried upstream) must not change the ids
                return b""
            self._id = response_id(event.id)
            self._created = event.created or now()
            self._model = event.model or self._model
            self._usage = event.usage
            return self._start()
        if isinstance(event, UsageEvent):
            self._usage = event.usage
            return b""
        if isinstance(event, StreamError):
            return self.fail(event)
        if getattr(event, "index", 0) != 0:
            return b""
        if isinstance(event, Finish):
            self._finish = event.reason
            return b""
        out = self._start()
        if isinstance(event, TextDelta):
            out += self._text(event.text)
        elif isinstance(event, ReasoningDelta):
            out += self._reasoning(event)
        elif isinstance(event, ToolCallStart):
            out += self._call_start(event)
        elif isinstance(event, ToolCallDelta):
            out += self._call_delta(event)
        return out

    def close(self) -> bytes:
        """The proper end: every open item finished, then the terminal response event."""
        if self._closed:
            return b""
        out = self._start() + self._close_open()
        self._closed = True
        status, incomplete, error = status_of(self._finish)
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}
        response = self._response(status, incomplete, error)
        return out + self._emit(kind.get(status, "response.failed"), response=response)

    def fail(self, err: StreamError) -> bytes:
        """A mid-stream error: an ``error`` event. Nothing follows it."""
        if self._closed:
            return b""
        self._closed = True
        return self._emit("error", code=err.code or err.type, message=err.message, param=None)

    # ------------------------------------------------------------------------- internals

    def _emit(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _response(
        self, status: str, incomplete: dict[str, Any] | None = None, error: Any = None
    ) -> dict[str, Any]:
        return response_object(
            rid=self._id,
            created=self._created,
            model=self._model,
            status=status,
            output=list(self._state.output),
            usage=self._usage if status != "in_progress" else None,
            incomplete=incomplete,
            error=error,
            request=self._request,
        )

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        if not self._id:
            self._id, self._created = response_id(None), now()
        response = self._response("in_progress")
        return self._emit("response.created", response=response) + self._emit(
            "response.in_progress", response=response
        )

    def _next_index(self) -> int:
        return len(self._state.output) + len(self._state.open)

    def _current(self, kind: str) -> _Item | None:
        open_ = self._state.open
        return open_[-1] if open_ and open_[-1].kind == kind else None

    # --- items

    def _open(self, kind: Literal["reasoning", "message", "call"], prefix: str) -> _Item:
        item = _Item(kind, item_id(prefix), self._next_index())
        self._state.open.append(item)
        return item

    def _close_open(self) -> bytes:
        out = b""
        for item in self._state.open:
            out += self._finish_item(item)
        self._state.open.clear()
        return out

    def _finish_item(self, item: _Item) -> bytes:
        out = b""
        ids: dict[str, Any] = {"item_id": item.id, "output_index": item.index}
        if item.kind == "reasoning":
            if item.opened_part:
                part: dict[str, Any] = {"type": "summary_text", "text": item.text}
                out += self._emit(
                    "response.reasoning_summary_text.done", **ids, summary_index=0, text=item.text
                )
                out += self._emit(
                    "response.reasoning_summary_part.done", **ids, summary_index=0, part=part
                )
            wire = reasoning_item(item.id, item.text, item.signature, item.redacted)
        elif item.kind == "message":
            part = {
                "type": "output_text",
                "text": item.text,
                "annotations": [],
                "logprobs": [],
            }
            ids["content_index"] = 0
            out += self._emit("response.output_text.done", **ids, text=item.text, logprobs=[])
            out += self._emit("response.content_part.done", **ids, part=part)
            wire = message_item(item.id, item.text, "completed")
        else:
            assert item.call is not None
            call = ToolCall(item.call.id, item.call.name, item.text)
            out += self._emit("response.function_call_arguments.done", **ids, arguments=item.text)
            wire = call_item(item.id, call, "completed", self._request.tool_namespaces)
        self._state.output.append(wire)
        return out + self._emit("response.output_item.done", output_index=item.index, item=wire)

    def _switch(self, kind: str) -> bytes:
        """Finishes the open items unless they are of ``kind``."""
        if self._state.open and self._state.open[-1].kind != kind:
            return self._close_open()
        return b""

    # --- content

    def _text(self, text: str) -> bytes:
        if not text:
            return b""
        out = self._switch("message")
        item = self._current("message")
        if item is None:
            item = self._open("message", "msg")
            added = message_item(item.id, "", "in_progress")
            added["content"] = []
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._emit("response.output_item.added", output_index=item.index, item=added)
            out += self._emit(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=part,
            )
        item.text += text
        return out + self._emit(
            "response.output_text.delta",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _reasoning(self, event: ReasoningDelta) -> bytes:
        if not (event.text or event.signature is not None or event.redacted is not None):
            return b""
        out = self._switch("reasoning")
        item = self._current("reasoning")
        sealed = item is not None and (item.signature is not None or item.redacted is not None)
        if item is None or sealed or (event.redacted is not None and item.text):
            out += self._close_open()  # a new reasoning block starts a new item
            item = self._open("reasoning", "rs")
            added = reasoning_item(item.id, "", None, None)
            out += self._emit("response.output_item.added", output_index=item.index, item=added)
        if event.text:
            ids = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            if not item.opened_part:
                item.opened_part = True
                part = {"type": "summary_text", "text": ""}
                out += self._emit("response.reasoning_summary_part.added", **ids, part=part)
            item.text += event.text
            out += self._emit("response.reasoning_summary_text.delta", **ids, delta=event.text)
        if event.signature is not None:
            item.signature = event.signature
        if event.redacted is not None:
            item.redacted = event.redacted
        return out

    def _call_start(self, event: ToolCallStart) -> bytes:
        out = self._switch("call")
        if event.signature:
            out += self._close_open()
            wire = signature_item(event.signature)
            index = self._next_index()
            out += self._emit("response.output_item.added", output_index=index, item=wire)
            self._state.output.append(wire)
            out += self._emit("response.output_item.done", output_index=index, item=wire)
        item = self._open("call", "fc")
        item.call = ToolCall(event.id, event.name, "")
        item.call_index = event.call_index
        added = call_item(item.id, item.call, "in_progress", self._request.tool_namespaces)
        return out + self._emit("response.output_item.added", output_index=item.index, item=added)

    def _call_delta(self, event: ToolCallDelta) -> bytes:
        if not event.arguments:
            return b""
        for item in reversed(self._state.open):
            if item.kind == "call" and item.call_index == event.call_index:
                item.text += event.arguments
                return self._emit(
                    "response.function_call_arguments.delta",
                    item_id=item.id,
                    output_index=item.index,
                    delta=event.arguments,
                )
        return b""  # arguments of a call already finished or never started: nothing to attach
