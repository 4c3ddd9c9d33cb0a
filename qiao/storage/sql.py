"""The SQL backend of :class:`~qiao.storage.base.Store`: SQLite (default) and PostgreSQL.

SQLAlchemy Core. Each operation is a plain function of a ``Connection`` that a runner executes
(:mod:`~qiao.storage.runners`: SQLite on its own threads, PostgreSQL on asyncpg); this module
owns the operations, the timeouts and the one place where driver exceptions are translated
(:meth:`SqlStore._guard`). A write is one transaction; on SQLite there is one writer connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, delete, inspect, literal, select, text
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql.base import Executable

from . import codec
from .base import StorageUnavailable
from .models import AuditEntry, ProviderSecret, Team, UsageRecord, VirtualKey
from .runners import Op, Runner, postgres_runner, sqlite_runner
from .schema import audit, changes, provider_secrets, teams, usage, virtual_keys
from .statements import Statements

__all__ = ["SqlStore"]

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATE_TIMEOUT = 120.0
_PG_MIGRATE_LOCK = 0x51A0_0001  # pg_advisory_xact_lock key: one migrator at a time
_OUTAGE_SQLSTATES = ("08", "53", "57")  # connection, resources, operator intervention/cancel
_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
# With synchronous_commit=off PostgreSQL acknowledges a COMMIT before its WAL is written, and a
# crash or an immediate stop in the next ~0.6 s (3 x wal_writer_delay) silently undoes it. The
# usage writer drops its journal once write_usage returns, so usage batches insist on a local
# WAL flush; a stricter setting (on, remote_write, remote_apply) is left as it is.
_DURABLE_COMMIT = text(
    "SELECT set_config('synchronous_commit', 'local', true)"
    " WHERE current_setting('synchronous_commit') = 'off'"
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def engine_url(url: str) -> URL:
    """``sqlite:///path`` / ``postgresql://…`` with our driver filled in (see runners)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(f"unsupported database URL {scheme!r}: use sqlite:// or postgresql://")
    parsed = make_url(driver + url[len(scheme) :])
    if driver.startswith("sqlite") and parsed.database in (None, "", ":memory:"):
        raise ValueError("an SQLite store needs a file path; use memory:// for a throwaway store")
    return parsed


class SqlStore:
    """A :class:`~qiao.storage.base.Store` on SQLite or PostgreSQL.

    ``read_timeout``/``write_timeout`` bound every call, waiting for a connection included;
    past it, or when the database refuses the connection, the call raises StorageUnavailable.
    ``pool_size``: connections (PostgreSQL: plus as many on overflow) or SQLite reader threads.
    """

    def __init__(
        self,
        url: str,
        *,
        read_timeout: float = 2.0,
        write_timeout: float = 5.0,
        pool_size: int = 5,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.url = engine_url(url)
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._clock = clock
        self._pg = self.url.get_backend_name() == "postgresql"
        self._sql = Statements(self.url.get_backend_name())
        self._runner: Runner
        if self._pg:
            self._runner = postgres_runner(self.url, pool_size, read_timeout)
        else:
            self._runner = sqlite_runner(self.url, pool_size, read_timeout, write_timeout)

    def __repr__(self) -> str:
        return f"SqlStore({self.url.render_as_string(hide_password=True)!r})"

    # --- plumbing

    @contextlib.asynccontextmanager
    async def _guard(self, seconds: float) -> AsyncIterator[None]:
        """The one place where foreign exceptions become ours."""
        try:
            async with asyncio.timeout(seconds):
                yield
        except (TimeoutError, PoolTimeout) as exc:
            raise StorageUnavailable(f"database did not answer within {seconds:g} s") from exc
        except IntegrityError as exc:
            raise ValueError(f"constraint violated: {exc.orig}") from exc
        except (OSError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not _unavailable(exc):
                raise  # a bug in a statement, not an outage
            raise StorageUnavailable(f"database unavailable: {exc}") from exc

    async def _read(self, op: Op[T]) -> T:
        async with self._guard(self._read_timeout):
            try:
                return await self._runner.read(op, self._read_timeout)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            # A pooled connection the server dropped (restart, failover, idle kill); the pool
            # has discarded it and its elders. Reads are safe to retry once; writes are not.
            # (Cheaper than pool_pre_ping, which costs asyncpg three round trips a call.)
            return await self._runner.read(op, self._read_timeout)

    async def _write(self, op: Op[T], seconds: float | None = None) -> T:
        """Run ``op`` in one transaction."""
        seconds = seconds or self._write_timeout
        async with self._guard(seconds):
            return await self._runner.write(op, seconds)

    async def _one(self, stmt: Executable, params: codec.Row | None = None) -> RowMapping | None:
        return await self._read(lambda conn: conn.execute(stmt, params).mappings().first())

    async def _all(self, stmt: Executable) -> Sequence[RowMapping]:
        return await self._read(lambda conn: conn.execute(stmt).mappings().all())

    def _bump(self, conn: Connection, kind: str, entity_id: str) -> None:
        """Record a key/team change under the next version. The counter row stays locked until
        commit, so versions commit in order and a reader never skips one."""
        conn.execute(self._sql.bump_version)
        version = conn.execute(self._sql.version).scalar_one()
        row = {"kind": kind, "entity_id": entity_id, "version": version}
        conn.execute(self._sql.record_change, row)

    # --- lifecycle

    async def migrate(self) -> None:
        def op(conn: Connection) -> None:
            if self._pg:
                conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATE_LOCK})"))
            _upgrade_head(conn)

        await self._write(op, max(MIGRATE_TIMEOUT, self._write_timeout))

    async def close(self) -> None:
        await self._runner.close()

    async def ping(self) -> None:
        await self._one(select(literal(1)))

    # --- teams

    async def put_team(self, team: Team) -> None:
        row = codec.team_row(team, self._clock())
        keep = ("created_at",) if team.created_at is None else ()
        upsert = self._sql.upsert(teams, ("id",), keep)

        def op(conn: Connection) -> None:
            conn.execute(upsert, row)
            self._bump(conn, "team", team.id)

        await self._write(op)

    async def get_team(self, team_id: str) -> Team | None:
        row = await self._one(select(teams).where(teams.c.id == team_id))
        return None if row is None else codec.team_from_row(row)

    async def list_teams(self) -> list[Team]:
        rows = await self._all(select(teams).order_by(teams.c.created_at, teams.c.id))
        return [codec.team_from_row(r) for r in rows]

    async def delete_team(self, team_id: str) -> bool:
        def op(conn: Connection) -> bool:
            deleted = conn.execute(delete(teams).where(teams.c.id == team_id)).rowcount
            if deleted:
                self._bump(conn, "team", team_id)
            return bool(deleted)

        return await self._write(op)

    # --- virtual keys

    async def put_key(self, key: VirtualKey) -> None:
        row = codec.key_row(key, self._clock())
        keep = ("created_at",) if key.created_at is None else ()
        upsert = self._sql.upsert(virtual_keys, ("id",), keep)

        def op(conn: Connection) -> None:
            conn.execute(upsert, row)
            self._bump(conn, "key", key.id)

        await self._write(op)

    async def get_key(self, key_id: str) -> VirtualKey | None:
        row = await self._one(select(virtual_keys).where(virtual_keys.c.id == key_id))
        return None if row is None else codec.key_from_row(row)

    async def get_key_by_hash(self, key_hash: bytes) -> VirtualKey | None:
        row = await self._one(self._sql.key_by_hash, {"p_hash": key_hash})
        return None if row is None else codec.key_from_row(row)

    async def list_keys(self, team_id: str | None = None) -> list[VirtualKey]:
        stmt = select(virtual_keys).order_by(virtual_keys.c.created_at, virtual_keys.c.id)
        if team_id is not None:
            stmt = stmt.where(virtual_keys.c.team_id == team_id)
        return [codec.key_from_row(r) for r in await self._all(stmt)]

    async def changes_since(self, version: int) -> tuple[int, list[str]]:
        def op(conn: Connection) -> tuple[int, list[str]]:
            # Counter first: a write landing in between is reported twice, never missed.
            current = int(conn.execute(self._sql.version).scalar_one())
            since = version if version <= current else 0  # a newer version: another database
            stmt = select(changes.c.entity_id).where(changes.c.version > since).distinct()
            return current, sorted(conn.execute(stmt).scalars())

        return await self._read(op)

    # --- provider secrets

    async def put_secret(self, secret: ProviderSecret) -> None:
        row = codec.secret_row(secret, self._clock())
        upsert = self._sql.upsert(provider_secrets, ("name",))
        await self._write(lambda conn: conn.execute(upsert, row))

    async def get_secret(self, name: str) -> ProviderSecret | None:
        row = await self._one(select(provider_secrets).where(provider_secrets.c.name == name))
        return None if row is None else codec.secret_from_row(row)

    async def list_secrets(self) -> list[ProviderSecret]:
        rows = await self._all(select(provider_secrets).order_by(provider_secrets.c.name))
        return [codec.secret_from_row(r) for r in rows]

    async def delete_secret(self, name: str) -> bool:
        stmt = delete(provider_secrets).where(provider_secrets.c.name == name)
        return await self._write(lambda conn: bool(conn.execute(stmt).rowcount))

    # --- usage

    async def write_usage(self, records: list[UsageRecord]) -> None:
        latest: dict[str, UsageRecord] = {}
        for record in records:  # fold duplicates in the batch by the same rule as the table
            seen = latest.get(record.attempt_id)
            if seen is None or codec.settles(seen.status, record.status):
                latest[record.attempt_id] = record
        if not latest:
            return
        if self._pg:
            rows = [codec.usage_row(r) for r in latest.values()]

            def op(conn: Connection) -> None:
                conn.execute(_DURABLE_COMMIT)  # acknowledged must mean kept: see above
                conn.execute(self._sql.write_usage, rows)

        else:
            stored = [codec.sqlite_usage_row(r) for r in latest.values()]

            def op(conn: Connection) -> None:
                driver = conn.connection.driver_connection
                if isinstance(driver, sqlite3.Connection):  # the default runner: skip Core too
                    driver.executemany(self._sql.write_usage_sqlite, stored)
                else:
                    conn.exec_driver_sql(self._sql.write_usage_sqlite, stored)

        await self._write(op)

    async def interrupt_stale(self, started_before: datetime, limit: int) -> int:
        params = {"p_before": started_before, "p_limit": limit, "p_now": self._clock()}
        stmt = self._sql.interrupt_stale
        return await self._write(lambda conn: int(conn.execute(stmt, params).rowcount))

    async def list_usage(
        self, *, key_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[UsageRecord]:
        stmt = select(usage)
        if key_id is not None:
            stmt = stmt.where(usage.c.key_id == key_id)
        if since is not None:
            stmt = stmt.where(usage.c.started_at >= since)
        undated_last = usage.c.started_at.is_(None)  # portable NULLS LAST
        stmt = stmt.order_by(undated_last, usage.c.started_at.desc(), usage.c.attempt_id.desc())
        return [codec.usage_from_row(r) for r in await self._all(stmt.limit(limit))]

    # --- spend

    async def reserve_spend(
        self, scope: str, period_start: datetime, amount: Decimal, limit: Decimal | None
    ) -> bool:
        if limit is None:
            await self.adjust_spend(scope, period_start, amount)
            return True
        params = {"p_scope": scope, "p_start": period_start, "p_delta": amount, "p_limit": limit}
        new = {"scope": scope, "period_start": period_start, "amount": Decimal(0)}

        def op(conn: Connection) -> bool:
            if conn.execute(self._sql.reserve, params).rowcount:
                return True
            conn.execute(self._sql.open_period, new)  # first use of the period
            return bool(conn.execute(self._sql.reserve, params).rowcount)

        return await self._write(op)

    async def adjust_spend(self, scope: str, period_start: datetime, delta: Decimal) -> None:
        row = {"scope": scope, "period_start": period_start, "amount": delta}
        await self._write(lambda conn: conn.execute(self._sql.add_spend, row))

    async def get_spend(self, scope: str, period_start: datetime) -> Decimal:
        row = await self._one(self._sql.get_spend, {"p_scope": scope, "p_start": period_start})
        return codec.money(row["amount"] if row is not None else 0)

    # --- audit

    async def audit(self, entry: AuditEntry) -> None:
        row = codec.audit_row(entry, self._clock())
        await self._write(lambda conn: conn.execute(audit.insert(), row))

    async def list_audit(self, limit: int = 100) -> list[AuditEntry]:
        rows = await self._all(select(audit).order_by(audit.c.id.desc()).limit(limit))
        return [codec.audit_from_row(r) for r in rows]


def _unavailable(exc: DBAPIError) -> bool:
    """An outage (lost/refused connection, locked, shutting down, out of resources, cancelled
    by a timeout) rather than a mistake in a statement."""
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        return True
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return sqlstate.startswith(_OUTAGE_SQLSTATES)


# The newest migration's revision id (a test checks it against the migration scripts): a
# database already there skips importing Alembic at start-up, which saves ~10 MB of memory.
HEAD_REVISION = "0004"


def _at_head(conn: Connection) -> bool:
    if not inspect(conn).has_table("alembic_version"):
        return False
    version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return version == HEAD_REVISION


def _upgrade_head(conn: Connection) -> None:
    if _at_head(conn):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
