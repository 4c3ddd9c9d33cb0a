"""Is Redis down, or is our own event loop only busy? The one place where Redis errors and
timeouts of the rate limiter become :class:`~.limits.LimiterUnavailable` (and those of the
budget ledger :class:`~qiao.storage.base.StorageUnavailable`: the same rule serves both).

Under a burst on two cores every worker's event loop is busy for longer than ``timeout`` while
Redis's replies already sit unread in their sockets. Taking such a late reply for an outage made
every worker of ``--workers 3`` fail over to local limits at once, admitting several times the
limit. So :meth:`RedisHealth.guard` applies this rule to each call:

- an error — a refused, reset or closed connection, an error reply — means Redis is down: the
  caller fails over at once (a busy loop does not refuse connections);
- a reply later than ``timeout`` is only a suspicion. The call keeps waiting (up to
  ``ceiling``) while a health probe runs in a thread of its own: a fresh connection and one
  PING bounded by ``probe_timeout``. That thread does not wait for our event loop (it needs only
  the GIL, which a busy loop hands over every few milliseconds), so its verdict is about Redis,
  not about us. Only when the probe fails as well is the waiting call cancelled and reported as
  down. One probe serves every call that is waiting meanwhile.

So a hung or blocked Redis is found out after ``timeout + probe_timeout``; a busy loop, however
slow, never fails over (past ``ceiling`` something else is wrong, and it does). Without a URL
to probe with (a client built elsewhere) the PING runs on the loop: as patient, but not
independent of the loop's lag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .limits import LimiterUnavailable

__all__ = ["RedisHealth"]

T = TypeVar("T")
_DOWN = "rate-limit store unavailable"


class RedisHealth:
    """Guards the calls of one client (see the module docstring). ``close`` when done."""

    def __init__(
        self,
        client: Redis,
        *,
        timeout: float,
        probe_url: str | None = None,
        probe_timeout: float = 1.0,
        ceiling: float = 5.0,
        error: Callable[[str], Exception] = LimiterUnavailable,
        what: str = _DOWN,
    ) -> None:
        self._client = client
        self._error = error
        self._what = what
        self._timeout = timeout
        self._url = probe_url
        self.probe_timeout = max(probe_timeout, timeout)
        self.ceiling = max(ceiling, self.probe_timeout + timeout)
        self._probing: asyncio.Future[str | None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def guard(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()``; raise ``error`` (:class:`LimiterUnavailable`) if Redis is down.
        The call is awaited directly with a timer beside it — no extra task or wait, each of
        which would cost an iteration of a loop that may be busy already."""
        task = asyncio.current_task()
        assert task is not None
        watch = _Watch(task)
        timer = asyncio.get_running_loop().call_later(self._timeout, watch.suspect, self.probe)
        try:
            async with asyncio.timeout(self.ceiling):
                return await make()
        except asyncio.CancelledError:
            if watch.verdict is None:
                raise
            task.uncancel()  # our own doing: the probe found Redis down
            raise self._error(f"{self._what}: {watch.verdict}") from None
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._error(f"{self._what}: {type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
            watch.done = True

    async def ping(self) -> None:
        """Raise ``error`` unless Redis answers the probe."""
        why = await self.probe()
        if why is not None:
            raise self._error(f"{self._what}: {why}")

    def probe(self) -> asyncio.Future[str | None]:
        """The running probe, or a new one: None if Redis answered, else why not."""
        if self._probing is None or self._probing.done():
            if self._url is None:
                self._probing = asyncio.ensure_future(self._ping_here())
            else:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="qiao-redis-probe")
                loop = asyncio.get_running_loop()
                self._probing = loop.run_in_executor(self._executor, self._ping_elsewhere)
        return self._probing

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _ping_elsewhere(self) -> str | None:
        """In the probe thread: a fresh connection and one PING, no retries."""
        wait = self.probe_timeout
        try:
            client = redis.Redis.from_url(
                str(self._url), socket_timeout=wait, socket_connect_timeout=wait, retry=None
            )
            with client:
                client.ping()
        except (RedisError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _ping_here(self) -> str | None:
        try:
            async with asyncio.timeout(self.probe_timeout):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


class _Watch:
    """Beside one call: past the soft timeout, ask the probe; if it finds Redis down while
    the call still waits, cancel the call's task with that verdict."""

    __slots__ = ("done", "task", "verdict")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.done = False
        self.verdict: str | None = None

    def suspect(self, probe: Callable[[], asyncio.Future[str | None]]) -> None:
        probe().add_done_callback(self._judge)

    def _judge(self, probe: asyncio.Future[str | None]) -> None:
        if self.done or probe.cancelled():
            return
        failed = probe.exception()
        why = f"health probe failed: {failed!r}" if failed is not None else probe.result()
        if why is not None:
            self.verdict = why
            self.task.cancel()
