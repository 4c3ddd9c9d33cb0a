"""Relay of OpenAI SSE streams (chat, completions, responses), event by event.

The relay is a small stateful object fed raw upstream bytes; it returns the
bytes to send on, holding back only an incomplete trailing event. On the way it
reads usage, notices the stream's proper end (``[DONE]`` or a terminal
Responses event), drops the usage chunk the caller did not ask for, and turns a
malformed event into an error event. Memory is bounded by one event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["MAX_EVENT_BYTES", "OpenAIStreamRelay"]

MAX_EVENT_BYTES = 8 * 1024 * 1024
_RESPONSES_TERMINAL = frozenset(
    {"response.completed", "response.failed", "response.incomplete", "error"}
)


class OpenAIStreamRelay:
    __slots__ = (
        "_buf",
        "_responses",
        "_sep",
        "_seq",
        "_strip_usage",
        "chunks",
        "done",
        "error",
        "failed",
        "observer",
        "usage",
    )

    def __init__(
        self,
        *,
        strip_usage: bool,
        responses: bool = False,
        observer: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.observer = observer  # sees every parsed chunk (provider quirks)
        self._buf = b""
        self._sep = b"\n\n"
        self._strip_usage = strip_usage
        self._responses = responses
        self._seq = -1
        self.usage: dict[str, Any] | None = None
        self.done = False  # the upstream ended the stream properly
        self.failed: str | None = None  # why we stopped relaying (malformed input)
        self.error = False  # the upstream sent an error event
        self.chunks = 0

    def feed(self, data: bytes) -> bytes:
        """Bytes to send to the client now (possibly empty)."""
        buf = self._buf + data if self._buf else data
        if self.chunks == 0 and b"\r\n" in buf:
            self._sep = b"\r\n\r\n"
        cut = buf.rfind(self._sep)
        if cut < 0:
            if len(buf) > MAX_EVENT_BYTES:
                self.failed = "upstream sent an SSE event larger than the limit"
            self._buf = buf
            return b""
        end = cut + len(self._sep)
        self._buf = buf[end:]
        out = []
        for event in buf[:cut].split(self._sep):
            kept = self._event(event)
            if kept is None:
                if self.failed:
                    break
                continue
            out.append(kept)
        if not out:
            return b""
        return self._sep.join(out) + self._sep

    def _event(self, event: bytes) -> bytes | None:
        data = _data_of(event)
        if data is None:
            return event if event.strip() else None  # comments, ids, retry: pass along
        if data == b"[DONE]":
            self.done = True
            return event
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.failed = "upstream sent a malformed stream event"
            return None
        if not isinstance(obj, dict):
            self.failed = "upstream sent a malformed stream event"
            return None
        self.chunks += 1
        if self._responses:
            return self._responses_event(event, obj)
        if obj.get("error"):
            self.error = True
        if self.observer is not None:
            self.observer(obj)
        usage = obj.get("usage")
        if usage:
            self.usage = usage
            if self._strip_usage and not obj.get("choices"):
                return None
        if self._strip_usage:
            event = event.replace(b',"usage":null', b"")
        return event

    def _responses_event(self, event: bytes, obj: dict[str, Any]) -> bytes:
        seq = obj.get("sequence_number")
        if isinstance(seq, int):
            self._seq = seq
        kind = obj.get("type")
        if kind in _RESPONSES_TERMINAL:
            self.done = True
            if kind != "response.completed":
                self.error = True
            response = obj.get("response")
            if isinstance(response, dict) and response.get("usage"):
                self.usage = response["usage"]
        return event

    def error_event(self, message: str, code: str, error_type: str = "server_error") -> bytes:
        """An error event in this stream's dialect, to end a broken stream."""
        if self._responses:
            self._seq += 1
            payload = {
                "type": "error",
                "code": code,
                "message": message,
                "param": None,
                "sequence_number": self._seq,
            }
            return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
        err = {"message": message, "type": error_type, "param": None, "code": code}
        return b"data: " + orjson.dumps({"error": err}) + b"\n\n"


def _data_of(event: bytes) -> bytes | None:
    """The data of one SSE event (lines joined by newlines), or None if it has none."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:].rstrip(b"\r")
    parts = []
    for line in event.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None
