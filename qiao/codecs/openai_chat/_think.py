"""Splitting a leading ``<think>…</think>`` block off model content.

MiniMax (by default) and raw open models served without a reasoning parser put their
reasoning at the start of ``content`` between ``<think>`` tags. The splitter is fed content
as it streams, tags split across chunks included, and says which pieces are reasoning.
Only a block at the very start (after whitespace) counts: a ``<think>`` later in an answer
is text. It holds back at most a partial tag (or a little leading whitespace).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["ThinkSplitter"]

_OPEN = "<think>"
_CLOSE = "</think>"
_MAX_LEADING = 256  # whitespace held while waiting to see whether "<think>" follows


class _State(Enum):
    START = 0  # nothing but whitespace seen yet
    THINK_LEAD = 1  # just after "<think>": drop leading whitespace
    THINK = 2
    AFTER = 3  # just after "</think>": drop the whitespace before the answer
    TEXT = 4


class ThinkSplitter:
    __slots__ = ("_held", "_state")

    def __init__(self) -> None:
        self._held = ""
        self._state = _State.START

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """Pieces ``(is_reasoning, text)`` to emit now, in order."""
        if self._state is _State.TEXT:
            return [(False, text)] if text else []
        out: list[tuple[bool, str]] = []
        buf, self._held = self._held + text, ""
        while buf:
            buf = self._step(buf, out)
        return out

    def flush(self) -> list[tuple[bool, str]]:
        """What was held back, at the end of the content."""
        held, self._held = self._held, ""
        if not held:
            return []
        if self._state is _State.START:
            self._state = _State.TEXT
            return [(False, held)]
        return [(True, held)]  # an unterminated "<think>" block, or a partial "</think>"

    def _step(self, buf: str, out: list[tuple[bool, str]]) -> str:
        """Consume some of ``buf``; return the rest still to look at."""
        state = self._state
        if state is _State.START:
            stripped = buf.lstrip()
            if stripped.startswith(_OPEN):
                self._state = _State.THINK_LEAD
                return stripped[len(_OPEN) :]
            if _OPEN.startswith(stripped) and len(buf) <= _MAX_LEADING:
                self._held = buf
                return ""
            self._state = _State.TEXT
            out.append((False, buf))
            return ""
        if state is _State.THINK_LEAD or state is _State.AFTER:
            stripped = buf.lstrip()
            if stripped:
                self._state = _State.THINK if state is _State.THINK_LEAD else _State.TEXT
            return stripped
        if state is _State.THINK:
            return self._think(buf, out)
        out.append((False, buf))
        return ""

    def _think(self, buf: str, out: list[tuple[bool, str]]) -> str:
        end = buf.find(_CLOSE)
        if end >= 0:
            if end:
                out.append((True, buf[:end]))
            self._state = _State.AFTER
            return buf[end + len(_CLOSE) :]
        keep = _partial_suffix(buf, _CLOSE)
        if len(buf) > keep:
            out.append((True, buf[: len(buf) - keep]))
        self._held = buf[len(buf) - keep :]
        return ""


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0
