"""Failed admin authentications, counted per source: past a few, the source waits (429).

An admin key is worth guessing; this makes guessing slow. Failures (401: a missing, unknown or
expired key or bootstrap token) are counted per source address in a fixed window; once a source
has ``limit`` of them, every admin request from it gets 429 with ``Retry-After`` until the
window ends, whatever key it presents (else the answer to the right key would stand out). A
success does not clear the count: a caller holding one valid key could otherwise reset it
between guesses. IPv6 sources count per /64, the block one host usually holds. Memory is
bounded: at most ``max_sources`` are tracked, expired ones go first, then the oldest.

State is per process (with ``--workers N`` a source gets ``limit`` tries per worker).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ClientError

__all__ = ["FailureThrottle", "TooManyFailures"]

log = logging.getLogger("qiao.admin")


class TooManyFailures(ClientError):
    status = 429
    type = "rate_limit_error"
    code = "too_many_failed_authentications"


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class FailureThrottle:
    def __init__(
        self,
        *,
        limit: int = 10,
        window_s: float = 60.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._max_sources = max_sources
        self._clock = clock
        self._windows: dict[str, _Window] = {}  # insertion order: oldest window first

    def check(self, remote: str | None) -> None:
        """Raise :class:`TooManyFailures` while ``remote`` is held back."""
        if not self._windows:
            return
        window = self._windows.get(_source(remote))
        if window is None or window.failures < self.limit:
            return
        left = window.started + self.window_s - self._clock()
        if left > 0:
            raise TooManyFailures(
                "Too many failed admin authentications from this address; "
                f"retry after {math.ceil(left)}s.",
                retry_after=left,
            )

    def failed(self, remote: str | None, code: str | None) -> None:
        """Count one failure (``code``: why, for the log; never the presented secret)."""
        source = _source(remote)
        now = self._clock()
        window = self._windows.get(source)
        if window is None or now - window.started >= self.window_s:
            self._windows.pop(source, None)
            self._make_room(now)
            window = self._windows[source] = _Window(now, 0)
        window.failures += 1
        if window.failures <= self.limit:
            log.warning(
                "admin authentication failed from %s (%s): %d of %d allowed in %gs",
                source,
                code or "invalid",
                window.failures,
                self.limit,
                self.window_s,
            )
        if window.failures == self.limit:
            log.warning("admin requests from %s held back for %gs", source, self.window_s)

    def _make_room(self, now: float) -> None:
        """Drop expired windows and, past ``max_sources``, the oldest. Windows are kept in the
        order they started, so both are at the front: amortised O(1) per failure."""
        windows = self._windows
        while windows:
            source, oldest = next(iter(windows.items()))
            if len(windows) < self._max_sources and now - oldest.started < self.window_s:
                return
            del windows[source]

    def __len__(self) -> int:
        return len(self._windows)


def _source(remote: str | None) -> str:
    """The address a failure is charged to: the host, or its /64 for IPv6."""
    text = (remote or "").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
