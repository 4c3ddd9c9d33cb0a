"""The sweeper: attempts left ``pending`` by a process that is gone for good become
``interrupted``.

The usage journal recovers what a dead process left on its disk when the next process starts
there (:mod:`~qiao.storage.journal`). What no process ever restarts next to — a node that
never comes back, a lost disk, a worker count lowered — would stay ``pending`` in the store
forever, and spend reports would never see it. So every node sweeps, every ``interval``
seconds: attempts still pending ``older_than`` seconds after they started (the longest total
timeout plus a margin: no live attempt can be that old) are marked ``interrupted``, tokens and
cost as last recorded, in bounded batches (one short statement each, so writers are never held
up). Sweeping twice, or from many nodes at once, is harmless, and a settle that arrives later
still replaces ``interrupted`` with the real outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .base import StorageUnavailable

__all__ = ["PendingSweeper", "Sweepable"]

log = logging.getLogger("qiao.usage")

MARGIN = 60.0  # seconds past the longest total timeout before a pending attempt is given up


class Sweepable(Protocol):
    """What the sweeper needs of a store (:class:`~qiao.storage.base.Store` has it)."""

    async def interrupt_stale(self, started_before: datetime, limit: int) -> int: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


class PendingSweeper:
    """Runs :meth:`sweep` every ``interval`` seconds (the first time at a random point of the
    first interval, so that nodes started together do not sweep together)."""

    def __init__(
        self,
        store: Sweepable,
        *,
        older_than: float,
        interval: float = 60.0,
        batch: int = 500,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._older_than = timedelta(seconds=older_than)
        self._interval = interval
        self._batch = batch
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """One pass, batch after batch until one is not full; how many were marked."""
        before = self._clock() - self._older_than
        total = 0
        while True:
            marked = await self._store.interrupt_stale(before, self._batch)
            total += marked
            if marked < self._batch:
                break
        if total:
            log.warning("usage: %d attempt(s) pending since before %s marked interrupted",
                        total, before.isoformat(timespec="seconds"))  # fmt: skip
        return total

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qiao-usage-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = random.uniform(0, self._interval)  # noqa: S311 - spreading, not crypto
        while True:
            await asyncio.sleep(delay)
            delay = self._interval
            try:
                await self.sweep()
            except StorageUnavailable as exc:  # the next pass catches up
                log.info("usage sweeper: store unavailable (%s)", exc)
            except Exception:  # a bug: say so, keep sweeping
                log.exception("usage sweeper")
