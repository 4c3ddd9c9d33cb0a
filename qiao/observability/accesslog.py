"""One structured JSON line per request.

Written straight to a stream with orjson rather than through ``logging``: this
runs on every request, and the fields are already structured.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from ..canonical import Usage
    from ..pricing import Money

__all__ = ["AccessLog", "RequestRecord"]

_MAX_LINES = 512  # written at once past this many in one loop iteration


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    path: str
    started: float  # perf_counter()
    key: str | None = None
    model: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    status: int = 0
    stream: bool = False
    upstream_s: float = 0.0  # time spent waiting on the upstream before our first byte
    first_byte_s: float | None = None  # client-side TTFB, from start
    usage: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0
    key_id: str | None = None  # the scope id of the caller's key (never the key)
    team_id: str | None = None
    attempt_id: str | None = None  # the attempt whose answer is being relayed
    attempt_started_at: datetime | None = None
    charged: tuple[Usage, Money | None] | None = None  # the settled usage and cost, priced once

    def overhead_ms(self, now: float) -> float:
        return max(0.0, (now - self.started - self.upstream_s) * 1000)


class AccessLog:
    """Lines are gathered and written once per event-loop iteration (one ``write(2)`` for all
    the requests that finished in it, instead of one each); outside a loop, at once."""

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self._lines: list[bytes] = []
        self._scheduled = False

    def write(self, rec: RequestRecord, now: float) -> None:
        if not self.enabled:
            return
        line: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "msg": "request",
            "request_id": rec.request_id,
            "method": rec.method,
            "path": rec.path,
            "status": rec.status,
            "key": rec.key,
            "model": rec.model,
            "provider": rec.provider,
            "upstream_model": rec.upstream_model,
            "stream": rec.stream,
            "attempts": rec.attempts,
            "latency_ms": round((now - rec.started) * 1000, 3),
            "upstream_ms": round(rec.upstream_s * 1000, 3),
            "overhead_ms": round(rec.overhead_ms(now), 3)
            if rec.first_byte_s is None
            else round(max(0.0, rec.first_byte_s - rec.upstream_s) * 1000, 3),
        }
        if rec.first_byte_s is not None:
            line["ttfb_ms"] = round(rec.first_byte_s * 1000, 3)
        if rec.usage:
            line["usage"] = rec.usage
        if rec.error:
            line["error"] = rec.error
        self._lines.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        if self._scheduled:
            if len(self._lines) >= _MAX_LINES:
                self.flush()
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop running: write now
            self.flush()
        else:
            self._scheduled = True

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        try:
            raw = getattr(self._stream, "buffer", None)
            if raw is None:
                self._stream.write(data.decode())
            else:
                self._stream.flush()  # what went through the text layer goes first
                raw.write(data)
                raw.flush()
        except (OSError, ValueError):  # closed or full stream: never fail a request over a log line
            pass
