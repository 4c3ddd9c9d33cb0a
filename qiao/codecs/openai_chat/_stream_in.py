"""Upstream ``chat.completion.chunk`` SSE bytes → canonical stream events (provider role)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    UsageEvent,
)
from ...errors import UpstreamProtocolError
from ._common import arguments_text, finish_in, reasoning_text, signature_of, stream_error, usage_in
from ._think import ThinkSplitter

__all__ = ["MAX_EVENT_BYTES", "StreamDecoder"]

MAX_EVENT_BYTES = 8 * 1024 * 1024  # one SSE event; also the cap on a call's held arguments


@dataclass(slots=True)
class _Call:
    """One tool call of one choice, keyed by the upstream's ``tool_calls[].index``."""

    call_index: int
    id: str
    name: str = ""
    signature: str | None = None
    started: bool = False
    held: list[str] = field(default_factory=list)  # arguments that came before the name


@dataclass(slots=True)
class _ChoiceState:
    think: ThinkSplitter = field(default_factory=ThinkSplitter)
    calls: dict[int, _Call] = field(default_factory=dict)
    finished: bool = False


class StreamDecoder:
    """Fed raw upstream bytes split anywhere; returns the canonical events they complete.

    Lines may end in ``\\n``, ``\\r\\n`` or ``\\r``; comments (``: keep-alive``, OpenRouter's
    ``: OPENROUTER PROCESSING``) and ``event:``/``id:`` fields are ignored. Memory is bounded
    by one event (:data:`MAX_EVENT_BYTES`) plus a little state per choice and tool call.
    """

    __slots__ = ("_buf", "_choices", "_data", "_data_size", "_started", "done")

    def __init__(self) -> None:
        self._buf = b""  # an incomplete line
        self._data: list[bytes] = []  # data lines of the event being read
        self._data_size = 0
        self._started = False
        self._choices: dict[int, _ChoiceState] = {}
        self.done = False  # True once "data: [DONE]" arrived

    def feed(self, data: bytes) -> list[Event]:
        if b"\n" not in data and b"\r" not in data:
            self._buf += data
            self._check_size()
            return []
        buf = self._buf + data
        hold = b""
        if buf.endswith(b"\r"):  # maybe the first half of "\r\n"
            buf, hold = buf[:-1], b"\r"
        lines = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buf = lines.pop() + hold
        events: list[Event] = []
        for line in lines:
            events.extend(self._line(line))
        self._check_size()
        return events

    def _check_size(self) -> None:
        if len(self._buf) + self._data_size > MAX_EVENT_BYTES:
            raise UpstreamProtocolError("upstream sent an SSE event larger than the limit")

    def _line(self, line: bytes) -> list[Event]:
        if not line:
            return self._dispatch()
        if line.startswith(b"data:"):
            value = line[6:] if line.startswith(b"data: ") else line[5:]
            if value.strip() == b"[DONE]":  # no need to wait for the blank line
                self.done = True
                self._data, self._data_size = [], 0
                return self._unfinished()
            self._data.append(value)
            self._data_size += len(value)
            self._check_size()
        return []  # comments and other fields

    def _dispatch(self) -> list[Event]:
        if not self._data:
            return []
        payload = b"\n".join(self._data)
        self._data, self._data_size = [], 0
        if self.done:
            return []
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError("upstream sent a malformed stream event") from None
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("upstream sent a malformed stream event")
        return self._chunk(obj)

    def _unfinished(self) -> list[Event]:
        """What choices that never got a finish_reason still hold back, at ``[DONE]``."""
        events: list[Event] = []
        for index, state in self._choices.items():
            if not state.finished:
                events.extend(_flush(state, index))
        return events

    # ------------------------------------------------------------------------- chunks

    def _chunk(self, obj: dict[str, Any]) -> list[Event]:
        if obj.get("error"):
            return [stream_error(obj["error"])]
        choices = obj.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise UpstreamProtocolError("upstream sent a chunk whose 'choices' is not an array")
        usage = obj.get("usage") or _groq_usage(obj)
        if not choices and not usage:
            return []  # Azure's prompt_filter_results chunk, or an empty keep-alive
        events: list[Event] = []
        if not self._started:
            self._started = True
            events.append(_start(obj))
        for choice in choices:
            if not isinstance(choice, dict):
                raise UpstreamProtocolError("upstream sent a malformed choice")
            events.extend(self._choice(choice))
        parsed = usage_in(usage)
        if parsed is not None:
            events.append(UsageEvent(parsed))
        return events

    def _choice(self, choice: dict[str, Any]) -> list[Event]:
        index = choice.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 128:
            raise UpstreamProtocolError("upstream sent a choice with a bad index")
        state = self._choices.setdefault(index, _ChoiceState())
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        events: list[Event] = []
        reasoning = reasoning_text(delta)
        if reasoning:
            events.append(ReasoningDelta(reasoning, index=index))
        events.extend(_content(state.think, delta.get("content"), index))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            events.append(TextDelta(refusal, index=index))
        calls = delta.get("tool_calls")
        for position, call in enumerate(calls if isinstance(calls, list) else []):
            events.extend(_tool_call(state, call, position, index))
        finish = choice.get("finish_reason")
        if finish and not state.finished:
            events.extend(_finish(state, finish, index))
        return events


def _start(obj: dict[str, Any]) -> StreamStart:
    rid, model, created = obj.get("id"), obj.get("model"), obj.get("created")
    return StreamStart(
        id=rid if isinstance(rid, str) else "",
        model=model if isinstance(model, str) else "",
        created=created if isinstance(created, int) and not isinstance(created, bool) else 0,
    )


def _groq_usage(obj: dict[str, Any]) -> object:
    extra = obj.get("x_groq")  # older Groq streams put usage here
    return extra.get("usage") if isinstance(extra, dict) else None


def _content(think: ThinkSplitter, content: object, index: int) -> list[Event]:
    if not isinstance(content, str) or not content:
        return []
    return [
        ReasoningDelta(text, index=index) if is_reasoning else TextDelta(text, index=index)
        for is_reasoning, text in think.feed(content)
    ]


def _tool_call(state: _ChoiceState, raw: object, position: int, index: int) -> list[Event]:
    """ToolCallStart the first time an upstream index shows a name, ToolCallDelta for argument
    fragments. Upstreams that resend id and name on every chunk are keyed by index only."""
    if not isinstance(raw, dict):
        raise UpstreamProtocolError("upstream sent a malformed tool call delta")
    key = raw.get("index", position)
    if not isinstance(key, int) or isinstance(key, bool):
        key = position
    call = state.calls.get(key)
    if call is None:
        if len(state.calls) >= 1024:
            raise UpstreamProtocolError("upstream sent too many tool calls")
        call_id = raw.get("id")
        call = _Call(len(state.calls), call_id if isinstance(call_id, str) and call_id else "")
        call.id = call.id or f"call_{index}_{call.call_index}"
        state.calls[key] = call
    function = raw.get("function")
    function = function if isinstance(function, dict) else {}
    call.signature = call.signature or signature_of(raw)
    name = function.get("name")
    if not call.started and isinstance(name, str) and name:
        call.name = name
    arguments = function.get("arguments")
    fragment = arguments_text(arguments) if arguments is not None else ""
    if not call.started and not call.name:
        if fragment:
            call.held.append(fragment)
            if sum(len(h) for h in call.held) > MAX_EVENT_BYTES:
                raise UpstreamProtocolError("upstream tool call arguments exceed the limit")
        return []
    events: list[Event] = []
    if not call.started:
        events.extend(_begin(call, index))
    if fragment:
        events.append(ToolCallDelta(fragment, call.call_index, index))
    return events


def _begin(call: _Call, index: int) -> list[Event]:
    """The start of a call, and the argument fragments that came before its name."""
    call.started = True
    events: list[Event] = [
        ToolCallStart(call.id, call.name, call.call_index, index, call.signature)
    ]
    if call.held:
        events.append(ToolCallDelta("".join(call.held), call.call_index, index))
        call.held.clear()
    return events


def _flush(state: _ChoiceState, index: int) -> list[Event]:
    """Held-back content (a partial ``<think>``) and calls whose name never came."""
    state.finished = True
    events: list[Event] = [
        ReasoningDelta(text, index=index) if is_reasoning else TextDelta(text, index=index)
        for is_reasoning, text in state.think.flush()
    ]
    for call in state.calls.values():
        if not call.started:
            events.extend(_begin(call, index))
    return events


def _finish(state: _ChoiceState, reason: object, index: int) -> list[Event]:
    events = _flush(state, index)
    if reason == "error":  # OpenRouter: the upstream model failed mid-stream
        return [*events, StreamError("upstream stopped with an error", status=502)]
    mapped = finish_in(reason, has_calls=bool(state.calls)) or "stop"
    return [*events, Finish(mapped, index)]
