"""Remembering ``reasoning_content`` for providers that need it sent back.

DeepSeek (and Kimi) thinking mode reject a history whose assistant tool-call
turns lack the ``reasoning_content`` the model produced for them (400 "The
reasoning_content in the thinking mode must be passed back to the API"). Many
clients (Cursor, LangChain, OpenCode) drop that field. Qiao remembers it, keyed
by tool-call id, from answers and streams, and fills it back into requests.

The memory is bounded in bytes (oldest forgotten first) and per process.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["ReasoningMemory", "StreamReasoning"]

_MAX_ONE = 256 * 1024


class ReasoningMemory:
    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._items: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, call_ids: list[str], reasoning: str) -> None:
        if not reasoning or not call_ids or len(reasoning) > _MAX_ONE:
            return
        for cid in call_ids:
            old = self._items.pop(cid, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[cid] = reasoning
            self._bytes += len(reasoning)
        while self._bytes > self._max and self._items:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= len(dropped)

    def learn_from_response(self, obj: Any) -> None:
        choices = obj.get("choices") if isinstance(obj, dict) else None
        for choice in choices if isinstance(choices, list) else ():
            msg = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(msg, dict):
                reasoning = msg.get("reasoning_content")
                if isinstance(reasoning, str):
                    self.remember(_call_ids(msg.get("tool_calls")), reasoning)

    def fill(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A copy of ``body`` with missing reasoning restored, or None if nothing was missing."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not self._items:
            return None
        out: list[Any] | None = None
        for i, msg in enumerate(messages):
            if not (isinstance(msg, dict) and msg.get("role") == "assistant"):
                continue
            if msg.get("reasoning_content") or not msg.get("tool_calls"):
                continue
            found = next(
                (self._items[c] for c in _call_ids(msg["tool_calls"]) if c in self._items), None
            )
            if found is not None:
                out = out if out is not None else list(messages)
                out[i] = {**msg, "reasoning_content": found}
        return None if out is None else {**body, "messages": out}


class StreamReasoning:
    """Collects reasoning deltas and tool-call ids of one stream, then remembers them."""

    __slots__ = ("_calls", "_memory", "_parts", "_size")

    def __init__(self, memory: ReasoningMemory) -> None:
        self._memory = memory
        self._parts: dict[int, list[str]] = {}
        self._calls: dict[int, list[str]] = {}
        self._size = 0

    def __call__(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            piece = delta.get("reasoning_content")
            if isinstance(piece, str) and piece and self._size < _MAX_ONE:
                self._parts.setdefault(index, []).append(piece)
                self._size += len(piece)
            ids = _call_ids(delta.get("tool_calls"))
            if ids:
                self._calls.setdefault(index, []).extend(ids)
            if choice.get("finish_reason") and index in self._calls:
                self._memory.remember(self._calls.pop(index), "".join(self._parts.pop(index, [])))


def _call_ids(tool_calls: Any) -> list[str]:
    if not isinstance(tool_calls, list):
        return []
    return [c["id"] for c in tool_calls if isinstance(c, dict) and isinstance(c.get("id"), str)]


class EventReasoning:
    """The same as :class:`StreamReasoning`, fed canonical stream events (translated streams)."""

    __slots__ = ("_calls", "_memory", "_parts", "_size")

    def __init__(self, memory: ReasoningMemory) -> None:
        self._memory = memory
        self._parts: dict[int, list[str]] = {}
        self._calls: dict[int, list[str]] = {}
        self._size = 0

    def __call__(self, event: object) -> None:
        from ..canonical import Finish, ReasoningDelta, ToolCallStart

        if isinstance(event, ReasoningDelta) and event.text and self._size < _MAX_ONE:
            self._parts.setdefault(event.index, []).append(event.text)
            self._size += len(event.text)
        elif isinstance(event, ToolCallStart):
            self._calls.setdefault(event.index, []).append(event.id)
        elif isinstance(event, Finish) and event.index in self._calls:
            reasoning = "".join(self._parts.pop(event.index, []))
            self._memory.remember(self._calls.pop(event.index), reasoning)
