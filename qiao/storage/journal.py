"""The usage journal: an append-only log of usage records on local disk, in segments.

One line per record (an orjson array, see :func:`encode`; ``Decimal`` as a string, datetimes
ISO-8601 UTC), written with one ``os.write`` on an ``O_APPEND`` descriptor. Once ``os.write``
returns, the bytes are in the kernel's page cache, so they survive the death of the process
(``kill -9``, OOM kill, a segfault) but not a kernel crash or power loss unless ``fsync`` is on;
:class:`~qiao.storage.writer.UsageWriter` then fsyncs once per batch from a worker thread, so a
power loss costs at most one flush interval.

Segments are ``usage-<number>.jsonl``, numbered in write order across process lifetimes; a new one
starts when the active one passes ``segment_bytes``. The directory is held with ``flock`` for the
life of the process (the kernel drops the lock when the process dies), so a journal is only ever
replayed by the next owner, never by a live one. The journals of one gateway are the configured
``journal_dir`` (one process) and its ``worker-<n>`` subdirectories (``--workers``); every start
takes over the segments of each of them whose lock is free (its owner is dead), so whichever
process starts next recovers them, however many workers the dead ones were. Segments are deleted
only in order, oldest first,
so what remains on disk is always a contiguous tail of history. A line that does not parse (a torn
write at the end of a segment after a power loss or a full disk) is skipped with a warning.
Records that the store rejects for good are kept in ``rejected.jsonl`` (never replayed).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

import orjson

from .models import UsageRecord, UsageStatus

__all__ = [
    "LINE_FIELDS",
    "Journal",
    "JournalLocked",
    "Segment",
    "decode",
    "encode",
    "read_batches",
    "worker_journal",
]

log = logging.getLogger("qiao.usage")

_PREFIX, _SUFFIX = "usage-", ".jsonl"
_STATUSES = frozenset(get_args(UsageStatus))
_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_WORKER_DIR = re.compile(r"worker-\d+")
_LOCK_WAIT = 1.0  # seconds: a sibling holds our lock only while it moves our segments


class JournalLocked(RuntimeError):
    """Another live process owns this journal directory (each process needs its own)."""


def worker_journal(root: str, index: int) -> str:
    """The journal directory of worker ``index`` under the configured ``journal_dir``. The
    name is how the other processes find it to recover it: keep the two together."""
    return os.path.join(root, f"worker-{index}")


def _siblings(directory: Path) -> list[Path]:
    """The other journals of this gateway: the configured root and its worker directories."""
    root = directory.parent if _WORKER_DIR.fullmatch(directory.name) else directory
    try:
        workers = sorted(p for p in root.iterdir() if _WORKER_DIR.fullmatch(p.name) and p.is_dir())
    except OSError:
        workers = []
    return [p for p in (root, *workers) if p != directory]


def _segment_files(directory: Path) -> list[tuple[int, Path]]:
    """(number, path) of the segments in ``directory``, oldest first."""
    found = []
    for path in directory.glob(f"{_PREFIX}*{_SUFFIX}"):
        digits = path.name[len(_PREFIX) : -len(_SUFFIX)]
        if digits.isdigit():  # else not ours
            found.append((int(digits), path))
    return sorted(found)


def _try_lock(directory: Path) -> int:
    """A descriptor holding ``directory``'s flock; raises BlockingIOError if a live process
    holds it, OSError if it cannot be opened."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is UTC or value.tzinfo is None:
        return value  # naive is UTC already (OPT_NAIVE_UTC)
    return value.astimezone(UTC)


LINE_TAG = "u1"  # a line is a JSON array: this tag, then the LINE_FIELDS in order. Frozen:
# a field added to UsageRecord means a new tag (and decode() reading both).
LINE_FIELDS = (
    "attempt_id",
    "request_id",
    "key_id",
    "team_id",
    "model",
    "provider",
    "status",
    "input_tokens",
    "output_tokens",
    "cost",
    "currency",
    "started_at",
    "finished_at",
    "http_status",
)


def encode(rec: UsageRecord) -> bytes:
    """One journal line, newline included: an array, half the size of an object and twice as
    fast to write (two per request); :func:`decode` also reads the object lines of before."""
    return orjson.dumps(
        [
            LINE_TAG,
            rec.attempt_id,
            rec.request_id,
            rec.key_id,
            rec.team_id,
            rec.model,
            rec.provider,
            rec.status,
            rec.input_tokens,
            rec.output_tokens,
            str(rec.cost),
            rec.currency,
            _utc(rec.started_at),
            _utc(rec.finished_at),
            rec.http_status,
        ],
        option=_OPTIONS,
    )


def _datetime(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def decode(line: bytes) -> UsageRecord | None:
    """The record on ``line``, or None if the line is torn or not a usage record."""
    try:
        data = orjson.loads(line)
        if isinstance(data, list):
            if len(data) != len(LINE_FIELDS) + 1 or data[0] != LINE_TAG:
                return None
            data = dict(zip(LINE_FIELDS, data[1:], strict=True))
        rec = UsageRecord(
            attempt_id=data["attempt_id"],
            request_id=data["request_id"],
            key_id=data.get("key_id"),
            team_id=data.get("team_id"),
            model=data["model"],
            provider=data.get("provider"),
            status=data.get("status", "pending"),
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cost=Decimal(data.get("cost", "0")),
            currency=data.get("currency", "USD"),
            started_at=_datetime(data.get("started_at")),
            finished_at=_datetime(data.get("finished_at")),
            http_status=data.get("http_status"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ArithmeticError):
        return None
    if not isinstance(rec.attempt_id, str) or rec.status not in _STATUSES:
        return None
    return rec


def read_batches(path: Path, *, skip: int, size: int) -> Iterator[tuple[list[UsageRecord], int]]:
    """(up to ``size`` records, lines consumed) from ``path``, after its first ``skip`` lines.

    Streams the file, so memory stays at one batch however large the segment is."""
    batch: list[UsageRecord] = []
    consumed = bad = 0
    try:
        f = path.open("rb")
    except FileNotFoundError:
        log.error("usage journal %s vanished; its records are lost", path.name)
        return
    with f:
        for index, raw in enumerate(f):
            if index < skip:
                continue
            consumed += 1
            # A record is only whole with its newline: os.write put both down together.
            rec = decode(raw) if raw.endswith(b"\n") else None
            if rec is None:
                bad += 1
            else:
                batch.append(rec)
            if len(batch) >= size:
                yield batch, consumed
                batch, consumed = [], 0
    if bad:
        log.warning("usage journal %s: skipped %d unreadable line(s)", path.name, bad)
    if batch or consumed:
        yield batch, consumed


@dataclass(slots=True, eq=False)
class Segment:
    number: int
    path: Path
    lines: int = 0  # lines appended (or found at start-up)
    committed: int = 0  # leading lines known to be in the store (or covered elsewhere)
    size: int = 0
    in_memory: bool = True  # every uncommitted line is also in the writer's queue
    inherited: bool = False  # left by an earlier process: replayed once at start-up
    closed: bool = False


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _fsync_and_close(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.fsync(fd)
        except OSError as exc:
            log.warning("usage journal: fsync failed: %s", exc)
        finally:
            os.close(fd)


class Journal:
    """Segment files, the directory lock and the active descriptor. Not thread-safe: one event
    loop thread appends and rotates; only :meth:`sync` runs elsewhere, on descriptors it owns."""

    def __init__(self, directory: Path, *, segment_bytes: int, fsync: bool) -> None:
        self.directory = directory
        self.segments: list[Segment] = []
        self.active: Segment | None = None
        self.error: OSError | None = None
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._fd = -1
        self._lock_fd = -1
        self._next = 1
        self._dirty = False
        self._unsynced: list[int] = []  # closed segment descriptors awaiting fsync
        self._new_entries = False  # a directory entry appeared since the last sync

    def open(self) -> None:
        """Lock the directory, adopt the segments earlier processes left (here and in the
        sibling journals no live process holds), start a new one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        for number, path in _segment_files(self.directory):
            self._inherit(number, path)
            self._next = number + 1
        for sibling in _siblings(self.directory):
            self._adopt(sibling)
        self.rotate((), in_memory=True)

    def _lock(self) -> None:
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                self._lock_fd = _try_lock(self.directory)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise JournalLocked(f"usage journal {self.directory} is in use") from None
                time.sleep(0.01)

    def _inherit(self, number: int, path: Path) -> None:
        seg = Segment(number, path, lines=_count_lines(path), size=path.stat().st_size)
        seg.in_memory, seg.inherited, seg.closed = False, True, True
        self.segments.append(seg)

    def _adopt(self, sibling: Path) -> None:
        """Move the segments of ``sibling`` here if its owner is gone (its lock is free), in
        order, so they are replayed with ours — and by our successor if we die first."""
        try:
            fd = _try_lock(sibling)
        except OSError:  # a live owner (BlockingIOError), or not a journal we can use
            return
        moved = 0
        try:
            for _, path in _segment_files(sibling):
                target = self.directory / f"{_PREFIX}{self._next:012d}{_SUFFIX}"
                os.rename(path, target)  # atomic: each segment is in exactly one journal
                self._inherit(self._next, target)
                self._next += 1
                moved += 1
            if moved and self._fsync:
                _fsync_dir(sibling)
                _fsync_dir(self.directory)
        except OSError as exc:
            log.error("usage journal: cannot recover %s: %s", sibling, exc)
        finally:
            os.close(fd)
        if moved:
            log.info("usage journal: recovering %d segment(s) left in %s", moved, sibling)

    def append(self, line: bytes, lines: int = 1) -> Segment | None:
        """Write ``line`` (``lines`` whole lines); the segment it went to, or None if the journal
        cannot take it."""
        seg = self.active
        if seg is None:
            return None
        try:
            written = os.write(self._fd, line)
            while written < len(line):  # only on a nearly full disk
                written += os.write(self._fd, line[written:])
        except OSError as exc:
            self.error = exc
            self._close_active()  # a torn line may end it: never append after one
            return None
        seg.lines += lines
        seg.size += written
        self._dirty = True
        return seg

    def needs_rotation(self) -> bool:
        return self.active is None or self.active.size >= self._segment_bytes

    def rotate(self, checkpoint: Iterable[bytes], *, in_memory: bool) -> bool:
        """Close the active segment and start the next, led by the ``checkpoint`` lines (copies of
        records already journaled, so they count as committed). False if it cannot be opened."""
        self._close_active()
        path = self.directory / f"{_PREFIX}{self._next:012d}{_SUFFIX}"
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o600)
        except OSError as exc:
            self.error = exc
            return False
        self._next += 1
        self._fd, self._new_entries = fd, True
        seg = Segment(self._next - 1, path, in_memory=in_memory)
        self.segments.append(seg)
        self.active = seg
        for line in checkpoint:
            if self.append(line) is None:
                return False
        seg.committed = seg.lines
        self.error = None
        return True

    def _close_active(self) -> None:
        if self.active is None:
            return
        self.active.closed = True
        self.active = None
        if self._fsync and self._dirty:
            self._unsynced.append(self._fd)  # closed by sync(), after its fsync
        else:
            os.close(self._fd)
        self._fd, self._dirty = -1, False

    def backlog(self) -> Segment | None:
        """The oldest closed segment whose records must be read back from disk."""
        for seg in self.segments:
            if seg.closed and not seg.inherited and not seg.in_memory and seg.committed < seg.lines:
                return seg
        return None

    def inherited(self) -> list[Segment]:
        return [seg for seg in self.segments if seg.inherited]

    def delete_committed(self) -> None:
        """Delete closed, fully committed segments, oldest first, up to the first that is not."""
        while self.segments:
            seg = self.segments[0]
            if seg.inherited or not seg.closed or seg.committed < seg.lines:
                return
            self.forget(seg)

    def forget(self, seg: Segment) -> None:
        """Delete one segment (inherited ones go this way once replayed)."""
        self.segments.remove(seg)
        seg.path.unlink(missing_ok=True)

    def mark_on_disk(self) -> None:
        for seg in self.segments:
            seg.in_memory = False

    def uncommitted(self) -> int:
        return sum(max(0, s.lines - s.committed) for s in self.segments)

    def dead_letter(self, line: bytes) -> None:
        with (self.directory / "rejected.jsonl").open("ab") as f:
            f.write(line)

    def take_unsynced(self) -> list[int]:
        """Descriptors to fsync (ownership passes to the caller, who gives them to :meth:`sync`)."""
        fds, self._unsynced = self._unsynced, []
        if self._dirty and self._fd >= 0:
            fds.append(os.dup(self._fd))
            self._dirty = False
        if self._new_entries:
            fds.append(os.open(self.directory, os.O_RDONLY))
            self._new_entries = False
        return fds

    @staticmethod
    def sync(fds: list[int]) -> None:
        """fsync and close ``fds``; safe in a worker thread (it owns them)."""
        _fsync_and_close(fds)

    def close(self, checkpoint: list[bytes]) -> None:
        """Close for good: delete what the store has, keep the rest for the next owner. The
        ``checkpoint`` (pending records of attempts still open) goes in a last segment first."""
        self._close_active()
        if checkpoint and self.rotate(checkpoint, in_memory=False):
            last = self.active
            self._close_active()
            if last is not None:
                last.committed = 0  # the next owner must read it
        if self._fsync:
            self.sync(self.take_unsynced())
        self.delete_committed()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
