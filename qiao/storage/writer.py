"""The usage writer: no usage record is lost to a crash, a slow or absent database, or a shutdown.

The gateway calls :meth:`UsageWriter.record` twice per upstream attempt: ``pending`` before the
request is forwarded and settled (``ok``/``error``/``interrupted``) after. ``record`` is plain
(not async), O(1) and never raises: it appends the record to the journal (``os.write``, see
:mod:`qiao.storage.journal`; settled records of one loop iteration share one) and puts it on a
bounded in-memory queue. One writer task takes the
queue in batches (``batch_size`` records or every ``flush_interval`` seconds) to
``store.write_usage``, which upserts on ``attempt_id``.

Every record is journaled, settled ones too, so the journal is a write-ahead log and the queue
only a fast path: after ``kill -9`` the next start replays what the store may lack, settled
attempts keep their tokens and cost, and pending attempts with no settle become ``interrupted``.
Pending records of attempts still open are copied to the head of each new segment, so old
segments can be deleted while long streams are in flight (so settle every attempt, even one the
client abandoned: an attempt never settled stays in memory until close). ``record`` costs about
3 µs of CPU (orjson ~1 µs, the write syscall ~1 µs, shared by the settled records of one loop
iteration); queueing settled records only in memory would save a little more but lose the
tokens and cost of every attempt settled in the last flush interval before a crash.

When the queue is full, or a store write fails, records are served from disk instead: the queue
is dropped (its records are journaled), new records are journaled only, and the writer replays
the journal, oldest segment first, retrying with jittered backoff; when the store answers it
catches up and returns to the queue. Memory stays bounded by ``queue_limit`` and one batch. A
record the store refuses on its own (not an outage) goes to ``rejected.jsonl`` after a few
tries, so one bad row cannot stall the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from .base import StorageUnavailable
from .journal import Journal, JournalLocked, Segment, encode, read_batches
from .models import UsageRecord

__all__ = ["JournalLocked", "UsageSink", "UsageWriter"]

log = logging.getLogger("qiao.usage")

WRITE_TIMEOUT = 10.0  # seconds; on top of the backend's own timeouts
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 5.0  # seconds, doubled per failure in a row, jittered
POISON_AFTER = 3  # non-outage failures in a row before a batch is written record by record
_OUTAGE = (StorageUnavailable, TimeoutError)
_MAX_HELD = 256  # settled records held for one write at most

_Entry = tuple[Segment | None, UsageRecord]  # None: the journal could not take it


class UsageSink(Protocol):
    """What the writer needs of a store (:class:`~qiao.storage.base.Store` has it)."""

    async def write_usage(self, records: list[UsageRecord]) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _collapse(records: list[UsageRecord]) -> list[UsageRecord]:
    """One record per attempt, the latest but never pending over settled: PostgreSQL refuses
    to upsert one key twice in a statement, and it saves a write."""
    latest: dict[str, UsageRecord] = {}
    for rec in records:
        seen = latest.get(rec.attempt_id)
        if seen is None or rec.status != "pending" or seen.status == "pending":
            latest[rec.attempt_id] = rec
    return records if len(latest) == len(records) else list(latest.values())


class UsageWriter:
    """Batches usage records to the store through an on-disk journal. Use from one event loop."""

    def __init__(
        self,
        store: UsageSink,
        journal_dir: str | os.PathLike[str],
        *,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        queue_limit: int = 10_000,
        segment_bytes: int = 4 << 20,
        fsync: Literal["off", "batch"] = "off",
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._journal_fsync = fsync == "batch"
        self._journal = Journal(
            Path(journal_dir), segment_bytes=segment_bytes, fsync=self._journal_fsync
        )
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._queue_limit = queue_limit
        self._clock = clock
        self._queue: deque[_Entry] = deque()
        self._open: dict[str, UsageRecord] = {}  # pending, not yet settled: for checkpoints
        self._held: list[tuple[UsageRecord, bytes]] = []  # settled, journaled at loop's turn
        self._held_scheduled = False
        self._spilled = False  # journal-only: the writer reads records back from disk
        self._degraded = False
        self._last_error: str | None = None
        self._failures = self._failures_in_row = 0
        self._dropped = self._rejected = self._inflight = self._draining = 0
        self._last_flush = 0.0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- the hot path

    def record(self, rec: UsageRecord) -> None:
        """Take one record: journal it, queue it. Never blocks, never raises.

        A pending record is on disk when this returns (before its attempt is forwarded). A
        settled one is written at the end of this event-loop iteration, together with the
        others of the iteration (or with the next pending record, whichever comes first): one
        ``write(2)`` for many under load. A ``kill -9`` inside that window leaves the attempt
        as ``interrupted`` instead of settled — never lost."""
        try:
            if self._closed:
                raise RuntimeError("usage writer is closed")
            self._held.append((rec, encode(rec)))
            if rec.status == "pending":
                self._open[rec.attempt_id] = rec
                self.write_held()
                return
            self._open.pop(rec.attempt_id, None)
            if len(self._held) >= _MAX_HELD:
                self.write_held()
            elif not self._held_scheduled:
                try:
                    asyncio.get_running_loop().call_soon(self._on_turn)
                except RuntimeError:  # no loop running: write now
                    self.write_held()
                else:
                    self._held_scheduled = True
        except Exception as exc:
            self._record_failed(rec, exc)

    def _on_turn(self) -> None:
        self._held_scheduled = False
        self.write_held()

    def write_held(self) -> None:
        """Journal and queue the records taken but not yet written."""
        held = self._held
        if not held:
            return
        self._held = []
        try:
            data = held[0][1] if len(held) == 1 else b"".join(line for _, line in held)
            seg = self._journal.append(data, lines=len(held))
        except Exception as exc:
            for rec, _ in held:
                self._record_failed(rec, exc)
            return
        for rec, _ in held:
            self._enqueue(seg, rec)

    def _enqueue(self, seg: Segment | None, rec: UsageRecord) -> None:
        if seg is not None and self._spilled:
            return
        queue = self._queue
        if len(queue) < self._queue_limit:
            queue.append((seg, rec))
            if len(queue) >= self._batch_size:
                self._wake.set()
        elif seg is not None:
            self._spilled = True  # full: the rest waits in the journal
            self._wake.set()
        else:
            self._dropped += 1  # neither disk nor memory can take it

    def _record_failed(self, rec: UsageRecord, exc: Exception) -> None:
        self._dropped += 1
        attempt = getattr(rec, "attempt_id", None)
        self._last_error = f"record {attempt!r}: {exc!r}"
        log.error("usage record %r dropped: %r", attempt, exc)

    # --- status, for readiness and metrics

    @property
    def queued(self) -> int:
        """Records waiting in memory (settled ones not yet journaled included)."""
        return len(self._queue) + len(self._held)

    @property
    def journaled(self) -> int:
        """Records waiting on disk only (spilled, written during an outage, or inherited)."""
        return max(0, self._journal.uncommitted() - len(self._queue) - self._inflight)

    @property
    def degraded(self) -> bool:
        """The last store write failed: records are piling up in the journal."""
        return self._degraded

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def dropped(self) -> int:
        """Records lost because neither the journal nor the queue could take them."""
        return self._dropped

    @property
    def rejected(self) -> int:
        """Records the store refused on their own, kept in ``rejected.jsonl``."""
        return self._rejected

    # --- life cycle

    async def start(self) -> None:
        """Lock and open the journal (raises :class:`JournalLocked` if another live process has
        it) and start the writer. Whatever earlier processes left — here, and in the sibling
        journals no live process holds (see :mod:`~qiao.storage.journal`) — is replayed first,
        in the background: a database that is down at boot delays the replay, not the gateway."""
        if self._task is not None:
            return
        self._journal.open()
        self._last_flush = asyncio.get_running_loop().time()
        if left := self._journal.uncommitted():
            log.info("usage journal: replaying %d record(s) from an earlier run", left)
        self._task = asyncio.create_task(self._run(), name="qiao-usage-writer")

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - a budget, not an error
        """Push everything recorded so far to the store, for at most ``timeout`` seconds (on
        SIGTERM). True when the store has it all; False if time ran out or the store failed
        meanwhile: the rest is already in the journal, for the next start to replay."""
        self.write_held()
        if self._task is None or self._task.done():
            return self._caught_up()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        failures = self._failures
        self._draining += 1
        try:
            while not self._caught_up():
                remaining = deadline - loop.time()
                if self._failures > failures or remaining <= 0:
                    return False
                self._progress.clear()
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._progress.wait()
            return True
        finally:
            self._draining -= 1

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - cleanup runs after
        """Drain for at most ``timeout`` seconds, stop the writer, close the journal. What the
        store lacks, and the pending records of attempts still open, stay in the journal."""
        if self._closed:
            return
        self.write_held()
        if self._task is not None:
            await self.drain(timeout)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._journal.close([encode(rec) for rec in self._open.values()])
        self._closed = True

    def _caught_up(self) -> bool:
        journal = self._journal
        return not (self._queue or self._inflight or journal.uncommitted() or journal.inherited())

    # --- the writer task

    async def _run(self) -> None:
        while True:
            try:
                if self._journal.inherited():
                    await self._replay_inherited()
                self._maintain()
                await self._sync()
                seg = self._journal.backlog()
                if seg is not None:
                    await self._replay_segment(seg)
                else:
                    await self._flush_queue()
            except Exception as exc:  # a bug or a vanished file: say so, keep going
                self._last_error = f"usage writer: {exc!r}"
                log.exception("usage writer")
                await self._sleep(BACKOFF_MAX)
            self._progress.set()

    async def _replay_inherited(self) -> None:
        """Replay an earlier process's journal: settled records as they are; a pending record
        with no settle after it was in flight when that process died, so it is ``interrupted``.
        Segments go only once all of it is stored: a crash here means replaying again."""
        segments = self._journal.inherited()
        orphans: dict[str, UsageRecord] = {}  # as many as were in flight: bounded
        for seg in segments:
            for batch, _ in read_batches(seg.path, skip=0, size=self._batch_size):
                settled = []
                for rec in batch:
                    if rec.status == "pending":
                        orphans[rec.attempt_id] = rec
                    else:
                        orphans.pop(rec.attempt_id, None)
                        settled.append(rec)
                if settled:
                    await self._write_retrying(settled)
        now = self._clock()
        lost = [
            replace(rec, status="interrupted", finished_at=rec.finished_at or now)
            for rec in orphans.values()
        ]
        for i in range(0, len(lost), self._batch_size):
            await self._write_retrying(lost[i : i + self._batch_size])
        for seg in segments:
            self._journal.forget(seg)
        if lost:
            log.warning("usage journal: %d attempt(s) marked interrupted", len(lost))
        self._progress.set()

    async def _replay_segment(self, seg: Segment) -> None:
        for batch, consumed in read_batches(seg.path, skip=seg.committed, size=self._batch_size):
            if batch:
                await self._write_retrying(batch)
            seg.committed += consumed
        seg.committed = max(seg.committed, seg.lines)

    async def _flush_queue(self) -> None:
        queue = self._queue
        now = asyncio.get_running_loop().time()
        due = self._last_flush + self._flush_interval
        if not queue or (len(queue) < self._batch_size and not self._draining and now < due):
            await self._sleep(due - now if queue else self._flush_interval)
            return
        self._last_flush = now
        entries = [queue.popleft() for _ in range(min(len(queue), self._batch_size))]
        if await self._write_once([rec for _, rec in entries]) is None:
            for seg, _ in entries:
                if seg is not None:
                    seg.committed += 1
            return
        # The journaled ones are read back from disk now; the rest can only be retried from here.
        self._queue.extendleft(reversed([e for e in entries if e[0] is None]))
        await self._backoff()

    async def _write_retrying(self, records: list[UsageRecord]) -> None:
        """Write until the store has them (or has refused them one by one)."""
        poison = 0
        while (exc := await self._write_once(records)) is not None:
            poison = 0 if isinstance(exc, _OUTAGE) else poison + 1
            if poison >= POISON_AFTER:
                records, poison = await self._isolate(records), 0
                if not records:
                    return
            await self._backoff()
            if self._journal.needs_rotation():
                self._rotate()
            await self._sync()  # an outage is no reason to hold back fsync

    async def _isolate(self, records: list[UsageRecord]) -> list[UsageRecord]:
        """Write one by one, setting aside what the store refuses on its own; returns the
        records still to write if an outage cuts in."""
        for i, rec in enumerate(records):
            exc = await self._write_once([rec])
            if exc is None:
                continue
            if isinstance(exc, _OUTAGE):
                return records[i:]
            self._rejected += 1
            log.error("usage record %r refused by the store: %r", rec.attempt_id, exc)
            try:
                self._journal.dead_letter(encode(rec))
            except OSError as err:
                log.error("usage record %r lost: %r", rec.attempt_id, err)
        return []

    async def _write_once(self, records: list[UsageRecord]) -> Exception | None:
        self._inflight += len(records)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self._store.write_usage(_collapse(records))
        except Exception as exc:
            self._failed(exc)
            return exc
        finally:
            self._inflight -= len(records)
            self._progress.set()
        if self._degraded:
            log.info("usage store is back; %d record(s) to catch up", self.journaled)
        self._degraded, self._failures_in_row = False, 0
        return None

    def _failed(self, exc: Exception) -> None:
        if not self._failures_in_row:
            log.warning("usage store write failed (%r): journaling until it recovers", exc)
        self._failures += 1
        self._failures_in_row += 1
        self._degraded, self._spilled = True, True
        self._last_error = f"{type(exc).__name__}: {exc}"
        active = self._journal.active
        if active is None or active.in_memory:
            self._to_disk()
            self._rotate()  # so what failed is in a closed segment, for replay

    def _maintain(self) -> None:
        if self._spilled and not self._degraded:
            self._to_disk()
            self._spilled = False
            self._rotate()  # new records go through memory again, after the backlog
        elif self._journal.needs_rotation():
            self._rotate()
        self._journal.delete_committed()

    def _to_disk(self) -> None:
        """From now on every journaled record waiting is read back from disk."""
        self.write_held()
        self._journal.mark_on_disk()
        if any(seg is not None for seg, _ in self._queue):
            self._queue = deque(e for e in self._queue if e[0] is None)

    def _rotate(self) -> None:
        self.write_held()  # settled lines go to the segment their pending lines are in
        checkpoint = [encode(rec) for rec in self._open.values()]
        if not self._journal.rotate(checkpoint, in_memory=not self._spilled):
            self._last_error = f"usage journal: {self._journal.error!r}"
            log.error("usage journal unavailable: %r", self._journal.error)

    async def _sync(self) -> None:
        if self._journal_fsync and (fds := self._journal.take_unsynced()):
            await asyncio.to_thread(Journal.sync, fds)

    async def _backoff(self) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self._failures_in_row, 16))
        await self._sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not crypto

    async def _sleep(self, seconds: float) -> None:
        """Sleep, cut short by a full batch, a spill, a drain or close."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._wake.wait()
