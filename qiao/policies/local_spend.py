"""Spend counters held in this process and written to the store behind the request path.

One process on SQLite (the default) would otherwise pay two database writes per request of a
key with a budget (reserve, then settle) — several hundred microseconds on the single writer.
When this process is the only one spending from a store, the counters can live in memory (exact:
asyncio runs one reservation at a time) and reach the store as coalesced deltas every half
second. Several processes or nodes must share counters instead: Redis, or the store directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from ..storage.base import StorageUnavailable
from .budget import SpendLedger

__all__ = ["WriteBehindLedger"]

log = logging.getLogger("qiao.spend")
_Key = tuple[str, datetime]


class WriteBehindLedger:
    def __init__(self, store: SpendLedger, *, flush_interval: float = 0.5) -> None:
        self._store = store
        self._interval = flush_interval
        self._spent: dict[_Key, Decimal] = {}
        self._loading: dict[_Key, asyncio.Future[Decimal]] = {}
        self._unsaved: defaultdict[_Key, Decimal] = defaultdict(Decimal)
        self._task: asyncio.Task[None] | None = None

    async def _current(self, key: _Key) -> Decimal:
        value = self._spent.get(key)
        if value is not None:
            return value
        loading = self._loading.get(key)
        if loading is None:  # one load per scope, however many requests wait for it
            loading = self._loading[key] = asyncio.ensure_future(self._store.get_spend(*key))
        try:
            loaded = await asyncio.shield(loading)
        finally:
            if loading.done():
                self._loading.pop(key, None)
        return self._spent.setdefault(key, loaded)

    def _add(self, key: _Key, delta: Decimal) -> None:
        self._spent[key] += delta
        self._unsaved[key] += delta
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def reserve_spend(
        self, scope: str, period_start: datetime, amount: Decimal, limit: Decimal | None
    ) -> bool:
        key = (scope, period_start)
        current = self._spent.get(key)
        if current is None:
            current = await self._current(key)
        if limit is not None and current + amount > limit:
            return False
        self._add(key, amount)
        return True

    async def adjust_spend(self, scope: str, period_start: datetime, delta: Decimal) -> None:
        key = (scope, period_start)
        await self._current(key)
        self._add(key, delta)

    def spent_now(self, scope: str, period_start: datetime) -> Decimal | None:
        """The spend so far, reservations included, without waiting; None if the counter is
        not loaded yet. A check and a following :meth:`adjust_spend_now` with no await in
        between are one atomic reservation."""
        return self._spent.get((scope, period_start))

    def adjust_spend_now(self, scope: str, period_start: datetime, delta: Decimal) -> bool:
        """:meth:`adjust_spend` without waiting; False (nothing done) if the counter is not
        loaded yet."""
        key = (scope, period_start)
        if key not in self._spent:
            return False
        self._add(key, delta)
        return True

    async def get_spend(self, scope: str, period_start: datetime) -> Decimal:
        return await self._current((scope, period_start))

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._interval)
        await self.flush()

    async def flush(self) -> None:
        """Write the deltas not yet in the store; on failure they wait for the next flush."""
        pending, self._unsaved = self._unsaved, defaultdict(Decimal)
        for key, delta in pending.items():
            if not delta:
                continue
            try:
                await self._store.adjust_spend(key[0], key[1], delta)
            except (StorageUnavailable, TimeoutError) as exc:
                self._unsaved[key] += delta
                log.warning("spend not saved yet (%s); will retry", type(exc).__name__)
        if self._unsaved and (
            self._task is None or self._task.done() or self._task is asyncio.current_task()
        ):
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def close(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
