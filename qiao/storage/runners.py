"""How a synchronous SQLAlchemy Core operation gets run from asyncio, one runner per driver.

Every :class:`~qiao.storage.sql.SqlStore` operation is a plain function of a ``Connection``.

- :class:`ThreadRunner` (SQLite, the default ``sqlite://``): the stdlib driver on one writer
  thread with one connection — SQLite never sees two writers from this process — and a few
  reader threads. A whole operation costs one hop to its thread and back; aiosqlite costs one
  hop per driver call (BEGIN, each statement, COMMIT): measured 3-4x slower for a small write.
- :class:`AsyncRunner` (PostgreSQL via asyncpg, or SQLite via ``sqlite+aiosqlite://``): the
  operation runs inside the async engine's greenlet bridge (``run_sync``).

Runners raise driver exceptions untouched; ``SqlStore._guard`` translates them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL

if TYPE_CHECKING:  # the asyncio extension (~6 MB) is imported for PostgreSQL only
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["AsyncRunner", "Op", "Runner", "ThreadRunner", "postgres_runner", "sqlite_runner"]

T = TypeVar("T")
Op = Callable[[Connection], T]


class ThreadRunner:
    def __init__(self, writer: Engine, reader: Engine, readers: int) -> None:
        self._writer, self._reader = writer, reader
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="qiao-sqlite-write")
        self._read_threads = ThreadPoolExecutor(readers, thread_name_prefix="qiao-sqlite-read")

    async def read(self, op: Op[T], seconds: float) -> T:
        call = functools.partial(_run, self._reader, op, time.monotonic() + seconds, False)
        return await asyncio.get_running_loop().run_in_executor(self._read_threads, call)

    async def write(self, op: Op[T], seconds: float) -> T:
        call = functools.partial(_run, self._writer, op, time.monotonic() + seconds, True)
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, call)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for engine, threads in (
            (self._writer, self._write_thread),
            (self._reader, self._read_threads),
        ):
            await loop.run_in_executor(threads, engine.dispose)  # after what is queued
            threads.shutdown(wait=False)


def _run(engine: Engine, op: Op[T], deadline: float, transaction: bool) -> T:
    # The caller stops waiting at the deadline but this thread cannot be interrupted: do not
    # start late, and roll back rather than commit late, so a timed-out call leaves no trace.
    if time.monotonic() > deadline:
        raise TimeoutError("the database was busy past the deadline")
    with engine.connect() as conn:
        if not transaction:
            return op(conn)
        with conn.begin():
            result = op(conn)
            if time.monotonic() > deadline:
                raise TimeoutError("the database was busy past the deadline")
        return result


class AsyncRunner:
    def __init__(self, writer: AsyncEngine, reader: AsyncEngine, *, one_writer: bool) -> None:
        self._writer, self._reader = writer, reader
        self._lock = asyncio.Lock() if one_writer else None

    async def read(self, op: Op[T], seconds: float) -> T:
        async with self._reader.connect() as conn:
            return await conn.run_sync(op)

    async def write(self, op: Op[T], seconds: float) -> T:
        async with self._lock or contextlib.nullcontext(), self._writer.begin() as conn:
            return await conn.run_sync(op)

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader.sync_engine.pool is not self._writer.sync_engine.pool:
            await self._reader.dispose()


Runner = ThreadRunner | AsyncRunner


def postgres_runner(url: URL, pool_size: int, connect_timeout: float) -> AsyncRunner:
    from sqlalchemy.ext.asyncio import create_async_engine

    writer = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"timeout": connect_timeout, "server_settings": {"application_name": "qiao"}},
    )
    # Single reads need no transaction: AUTOCOMMIT saves a BEGIN and a ROLLBACK round trip.
    reader = writer.execution_options(isolation_level="AUTOCOMMIT")
    return AsyncRunner(writer, reader, one_writer=False)


def sqlite_runner(url: URL, readers: int, read_timeout: float, write_timeout: float) -> Runner:
    """WAL, synchronous=NORMAL; the writer takes the write lock up front (BEGIN IMMEDIATE) so a
    second process waits on busy_timeout instead of failing half-way; readers are query-only
    autocommit connections (each SELECT sees one snapshot, never blocks the writer)."""
    if url.drivername == "sqlite+aiosqlite":
        from sqlalchemy.ext.asyncio import create_async_engine

        w = create_async_engine(url, pool_size=1, max_overflow=0)
        r = create_async_engine(url, pool_size=readers, max_overflow=0)
        _sqlite_pragmas(w.sync_engine, write_timeout, writer=True)
        _sqlite_pragmas(r.sync_engine, read_timeout, writer=False)
        return AsyncRunner(w, r, one_writer=True)
    writer = create_engine(url, pool_size=1, max_overflow=0)
    reader = create_engine(url, pool_size=readers, max_overflow=0)
    _sqlite_pragmas(writer, write_timeout, writer=True)
    _sqlite_pragmas(reader, read_timeout, writer=False)
    return ThreadRunner(writer, reader, readers)


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (it holds key hashes and encrypted
    provider keys); SQLite gives the -wal and -shm files the same mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _sqlite_pragmas(engine: Engine, timeout: float, *, writer: bool) -> None:
    busy_ms = int(timeout * 900)  # SQLite gives up a little before we do: a clean error
    path = Path(engine.url.database or "")

    @event.listens_for(engine, "do_connect")
    def _before_connect(*_: Any) -> None:
        _create_private(path)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver never BEGINs by itself; _on_begin does
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if writer:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        else:
            cursor.execute("PRAGMA query_only = ON")
        cursor.close()

    if writer:

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
