"""Contract tests for qiao.storage, the same on every backend: memory, SQLite, PostgreSQL.

Async bodies run with ``asyncio.run`` (no pytest-asyncio); each test gets a fresh database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from services import fresh_postgres_db
from sqlalchemy import Connection, create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from qiao.storage import MemoryStore, SqlStore, StorageUnavailable, Store, open_store
from qiao.storage.models import (
    AuditEntry,
    Budget,
    Limits,
    ProviderSecret,
    Team,
    UsageRecord,
    VirtualKey,
)
from qiao.storage.schema import metadata
from qiao.storage.sql import engine_url

Body = Callable[[Store], Awaitable[None]]
PERIOD = datetime(2025, 6, 1, tzinfo=UTC)
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _backend_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend.startswith("sqlite"):  # sqlite: stdlib driver on threads; sqlite+aiosqlite
        return f"{backend}:///{tmp_path / 'qiao.db'}"
    return fresh_postgres_db(request.getfixturevalue("postgres_server").dsn)


@pytest.fixture(params=["memory", "sqlite", "sqlite+aiosqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _backend_url(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "sqlite+aiosqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _backend_url(request.param, request, tmp_path)


def run(url: str, body: Body, **kw: Any) -> None:
    async def main() -> None:
        store = open_store(url, **kw)
        try:
            await store.migrate()
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def make_key(key_id: str = "k1", secret: bytes = b"sk-test-1", **kw: Any) -> VirtualKey:
    digest = hashlib.sha256(secret).digest()
    return VirtualKey(id=key_id, name=key_id, key_hash=digest, hint="sk-…" + key_id, **kw)


def usage(attempt_id: str, status: Any = "pending", **kw: Any) -> UsageRecord:
    kw.setdefault("key_id", "k1")
    return UsageRecord(attempt_id, "req-" + attempt_id, team_id=None, model="m", provider="p",
                       status=status, **kw)  # fmt: skip


# --- teams, keys, secrets


def test_team_crud(url: str) -> None:
    async def body(s: Store) -> None:
        team = Team("t1", "Team 1", Limits(rpm=60), Budget(Decimal("12.345")), {"tier": "gold"})
        await s.put_team(team)
        got = await s.get_team("t1")
        assert got is not None and got.created_at is not None
        assert got == dataclasses.replace(team, created_at=got.created_at)
        await s.put_team(Team("t1", "renamed"))
        again = await s.get_team("t1")
        assert again is not None and again.name == "renamed"
        assert again.created_at == got.created_at and again.budget is None
        await s.put_team(Team("t2", "Team 2"))
        assert [t.id for t in await s.list_teams()] == ["t1", "t2"]
        assert await s.delete_team("t1") is True
        assert await s.delete_team("t1") is False
        assert await s.get_team("t1") is None

    run(url, body)


def test_key_round_trip_and_lookup_by_hash(url: str) -> None:
    east8 = timezone(timedelta(hours=8))
    key = make_key(
        team_id="t1",
        models=("gpt-4o*", "claude-*"),
        cidrs=("10.0.0.0/8",),
        expires_at=datetime(2030, 1, 1, 8, 0, tzinfo=east8),
        metadata={"owner": "ann", "tags": ["a", "b"]},
        limits=Limits(rpm=10, tpm=1000, concurrency=2),
        model_limits={"gpt-4o*": Limits(rpm=5)},
        budget=Budget(Decimal("99.99"), "CNY", "day", hard=False),
        role="admin",
    )

    async def body(s: Store) -> None:
        await s.put_key(key)
        got = await s.get_key("k1")
        assert got is not None and got.created_at is not None and got.updated_at is not None
        assert got == dataclasses.replace(key, created_at=got.created_at, updated_at=got.updated_at)
        assert got.expires_at is not None and got.expires_at.tzinfo == UTC
        assert await s.get_key_by_hash(key.key_hash) == got
        assert await s.get_key_by_hash(hashlib.sha256(b"other").digest()) is None
        assert await s.get_key("nope") is None

    run(url, body)


def test_put_key_replaces_by_id_keeps_created_at_and_lists_by_team(url: str) -> None:
    async def body(s: Store) -> None:
        await s.put_key(make_key("k1", b"s1", team_id="t1"))
        await s.put_key(make_key("k2", b"s2", team_id="t2"))
        first = await s.get_key("k1")
        revoked = datetime(2025, 1, 2, tzinfo=UTC)
        await s.put_key(make_key("k1", b"s1", team_id="t1", revoked_at=revoked))
        second = await s.get_key("k1")
        assert first is not None and second is not None
        assert second.revoked_at == revoked and second.created_at == first.created_at
        assert [k.id for k in await s.list_keys()] == ["k1", "k2"]
        assert [k.id for k in await s.list_keys(team_id="t2")] == ["k2"]
        assert await s.list_keys(team_id="none") == []

    run(url, body)


def test_two_keys_cannot_share_a_hash(url: str) -> None:
    async def body(s: Store) -> None:
        await s.put_key(make_key("k1", b"same"))
        with pytest.raises(ValueError, match="constraint"):
            await s.put_key(make_key("k2", b"same"))
        assert [k.id for k in await s.list_keys()] == ["k1"]

    run(url, body)


def test_secret_crud(url: str) -> None:
    secret = ProviderSecret("openai", b"\x00\xffcipher", b"n" * 12, "mk-1", "sk-…ab12")

    async def body(s: Store) -> None:
        await s.put_secret(secret)
        got = await s.get_secret("openai")
        assert got is not None and got.updated_at is not None
        assert got == dataclasses.replace(secret, updated_at=got.updated_at)
        await s.put_secret(dataclasses.replace(secret, ciphertext=b"new", key_id="mk-2"))
        await s.put_secret(dataclasses.replace(secret, name="anthropic"))
        assert [x.name for x in await s.list_secrets()] == ["anthropic", "openai"]
        got = await s.get_secret("openai")
        assert got is not None and (got.ciphertext, got.key_id) == (b"new", "mk-2")
        assert await s.delete_secret("openai") is True
        assert await s.delete_secret("openai") is False
        assert await s.get_secret("openai") is None

    run(url, body)


def test_changes_since_counts_key_and_team_writes(url: str) -> None:
    async def body(s: Store) -> None:
        assert await s.changes_since(0) == (0, [])
        await s.put_key(make_key("k1"))
        assert await s.changes_since(0) == (1, ["k1"])
        await s.put_team(Team("t1", "T"))
        await s.put_secret(ProviderSecret("p", b"c", b"n", "m", "h"))  # not a key or team
        assert await s.changes_since(1) == (2, ["t1"])
        await s.put_key(make_key("k1", revoked_at=T0))
        await s.delete_team("t1")
        assert await s.changes_since(2) == (4, ["k1", "t1"])
        assert await s.changes_since(4) == (4, [])
        assert await s.changes_since(99) == (4, ["k1", "t1"])  # another database: everything

    run(url, body)


# --- usage


def test_usage_pending_then_settled(url: str) -> None:
    async def body(s: Store) -> None:
        await s.write_usage([usage("a1", started_at=T0)])
        done = usage("a1", "ok", input_tokens=10, output_tokens=5, cost=Decimal("0.00000015"),
                     started_at=T0, finished_at=T0 + timedelta(seconds=2), http_status=200)  # fmt: skip
        await s.write_usage([done])
        assert await s.list_usage() == [done]

    run(url, body)


def test_late_pending_never_regresses_a_settled_row(url: str) -> None:
    async def body(s: Store) -> None:
        settled = usage("a1", "ok", output_tokens=7, started_at=T0)
        await s.write_usage([settled])
        await s.write_usage([usage("a1", started_at=T0)])
        await s.write_usage([usage("a2", "error"), usage("a2", "pending")])  # same batch
        got = {u.attempt_id: u for u in await s.list_usage()}
        assert got["a1"] == settled
        assert got["a2"].status == "error"

    run(url, body)


def test_duplicate_usage_writes_make_one_row(url: str) -> None:
    async def body(s: Store) -> None:
        record = usage("a1", "ok", cost=Decimal("0.5"))
        await s.write_usage([record, record])
        await s.write_usage([record])
        await s.write_usage([])
        assert await s.list_usage() == [dataclasses.replace(record, cost=Decimal("0.5"))]

    run(url, body)


def test_sqlite_usage_fast_path_stores_what_core_stores(tmp_path: Path) -> None:
    """The default SQLite runner writes usage as driver SQL on pre-converted rows; every column
    must hold exactly what SQLAlchemy's typed statement stores (text order = time order)."""
    plus8 = timezone(timedelta(hours=8))
    records = [
        usage("a1", "ok", input_tokens=3, output_tokens=4, cost=Decimal("0.1234567894"),
              currency="CNY", started_at=datetime(2025, 6, 1, 20, 0, 0, 1, tzinfo=plus8),
              finished_at=T0 + timedelta(microseconds=999_999), http_status=200),
        usage("a2", "pending", cost=Decimal(0), started_at=datetime(2025, 6, 1, 12, 0)),
        dataclasses.replace(usage("a3", "error", key_id=None, cost=Decimal("12345.5"),
                                  started_at=T0.replace(microsecond=0)), team_id="t1"),
    ]  # fmt: skip

    async def write(path: Path, fast: bool) -> None:
        store = SqlStore(f"sqlite:///{path}")
        await store.migrate()
        if fast:
            await store.write_usage(records)
        else:
            from qiao.storage import codec

            rows = [codec.usage_row(r) for r in records]
            await store._write(lambda conn: conn.execute(store._sql.write_usage, rows))
        await store.close()

    raw = []
    for name, fast in (("core.db", False), ("fast.db", True)):
        asyncio.run(write(tmp_path / name, fast))
        with sqlite3.connect(tmp_path / name) as db:
            raw.append(db.execute("SELECT * FROM usage ORDER BY attempt_id").fetchall())
    assert raw[0] == raw[1]
    assert raw[1][0][9] == 123456789  # nano-units, half-even
    assert raw[1][0][11] == "2025-06-01 12:00:00.000001"  # UTC, naive text


def test_list_usage_filters_and_orders_newest_first(url: str) -> None:
    async def body(s: Store) -> None:
        records = [
            usage(f"a{i}", key_id="k1", started_at=T0 + timedelta(minutes=i)) for i in range(5)
        ]
        records += [usage("b1", key_id="k2", started_at=T0), usage("c1", key_id="k1")]
        await s.write_usage(records)
        assert [u.attempt_id for u in await s.list_usage(key_id="k1")] == [
            "a4", "a3", "a2", "a1", "a0", "c1",
        ]  # fmt: skip
        since = (T0 + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=-5)))
        assert [u.attempt_id for u in await s.list_usage(since=since)] == ["a4", "a3"]
        assert [u.attempt_id for u in await s.list_usage(key_id="k2")] == ["b1"]
        assert len(await s.list_usage(limit=2)) == 2

    run(url, body)


# --- spend


def test_budget_race_never_overdraws(url: str) -> None:
    """50 concurrent reservations of 0.10 against 1.00: exactly 10 win, spend is exactly 1.00.
    SQL backends race over several stores (separate connections, on SQLite separate writers)."""
    stores = 1 if url.startswith("memory") else 5

    async def main() -> tuple[list[bool], Decimal]:
        opened = [open_store(url) for _ in range(stores)]
        try:
            await opened[0].migrate()
            calls = [
                opened[i % stores].reserve_spend("key:k1", PERIOD, Decimal("0.10"), Decimal("1.00"))
                for i in range(50)
            ]
            results = await asyncio.gather(*calls)
            return results, await opened[0].get_spend("key:k1", PERIOD)
        finally:
            for store in opened:
                await store.close()

    results, spent = asyncio.run(main())
    assert results.count(True) == 10
    assert spent == Decimal("1.00")


def test_reserve_refuses_past_the_limit_and_settles_exactly(url: str) -> None:
    async def body(s: Store) -> None:
        assert await s.reserve_spend("k", PERIOD, Decimal("2"), Decimal("1")) is False
        assert await s.get_spend("k", PERIOD) == 0
        assert await s.reserve_spend("k", PERIOD, Decimal("0.1"), Decimal("1")) is True
        assert await s.reserve_spend("k", PERIOD, Decimal("0.2"), Decimal("1")) is True
        assert await s.get_spend("k", PERIOD) == Decimal("0.3")
        assert await s.reserve_spend("k", PERIOD, Decimal("0.71"), Decimal("1")) is False
        await s.adjust_spend("k", PERIOD, Decimal("-0.25"))  # settle below the estimate
        assert await s.get_spend("k", PERIOD) == Decimal("0.05")
        assert await s.reserve_spend("k", PERIOD, Decimal("1000"), None) is True
        assert await s.get_spend("k", PERIOD) == Decimal("1000.05")

    run(url, body)


def test_spend_is_per_scope_and_period_whatever_the_time_zone(url: str) -> None:
    async def body(s: Store) -> None:
        await s.adjust_spend("k", PERIOD, Decimal("1.5"))  # first write creates the row
        await s.adjust_spend("k", PERIOD.astimezone(timezone(timedelta(hours=8))), Decimal(1))
        await s.adjust_spend("k", PERIOD.replace(tzinfo=None), Decimal(1))  # naive means UTC
        await s.adjust_spend("k", PERIOD + timedelta(days=30), Decimal("0.2"))
        await s.adjust_spend("other", PERIOD, Decimal("0.3"))
        assert await s.get_spend("k", PERIOD) == Decimal("3.5")
        assert await s.get_spend("k", PERIOD + timedelta(days=30)) == Decimal("0.2")
        assert await s.get_spend("nobody", PERIOD) == 0

    run(url, body)


def test_money_keeps_nine_places_rounding_half_even(url: str) -> None:
    async def body(s: Store) -> None:
        await s.adjust_spend("k", PERIOD, Decimal("0.0000000025"))
        assert await s.get_spend("k", PERIOD) == Decimal("0.000000002")
        await s.adjust_spend("k", PERIOD, Decimal("123456789.123456789"))
        assert await s.get_spend("k", PERIOD) == Decimal("123456789.123456791")

    run(url, body)


# --- audit, migrations


def test_audit_appends_and_lists_newest_first(url: str) -> None:
    async def body(s: Store) -> None:
        for i in range(3):
            await s.audit(AuditEntry("admin", "key.create", f"k{i}", {"n": i}))
        await s.audit(AuditEntry("admin", "key.revoke", "k0", at=T0))
        entries = await s.list_audit()
        assert [e.target for e in entries] == ["k0", "k2", "k1", "k0"]
        assert [e.id for e in entries] == sorted((e.id or 0 for e in entries), reverse=True)
        assert entries[0].at == T0 and entries[1].detail == {"n": 2}
        assert all(e.at is not None and e.at.tzinfo == UTC for e in entries)
        assert [e.target for e in await s.list_audit(limit=1)] == ["k0"]

    run(url, body)


def test_migrate_twice_is_a_no_op(url: str) -> None:
    async def body(s: Store) -> None:
        await s.put_team(Team("t1", "T"))
        await s.migrate()
        await s.migrate()
        assert [t.id for t in await s.list_teams()] == ["t1"]
        assert await s.changes_since(0) == (1, ["t1"])

    run(url, body)


def test_migration_creates_exactly_the_schema(sql_url: str) -> None:
    def diff(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async def migrate() -> None:
        store = SqlStore(sql_url)
        try:
            await store.migrate()
        finally:
            await store.close()

    async def compare_async() -> list[Any]:
        engine = create_async_engine(engine_url(sql_url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(diff)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    if engine_url(sql_url).get_dialect().is_async:
        assert asyncio.run(compare_async()) == []
    else:
        engine = create_engine(engine_url(sql_url))
        with engine.connect() as conn:
            assert diff(conn) == []
        engine.dispose()


# --- outages


def test_postgres_down_is_storage_unavailable_then_recovers(postgres_server: Any) -> None:
    url = fresh_postgres_db(postgres_server.dsn)

    async def body(s: Store) -> None:
        await s.put_key(make_key())
        postgres_server.stop()
        try:
            for call in (s.ping(), s.get_key("k1"), s.put_team(Team("t", "T"))):
                started = time.monotonic()
                with pytest.raises(StorageUnavailable):
                    await call
                assert time.monotonic() - started < 1.5
        finally:
            postgres_server.start()
        assert (await s.get_key("k1")) is not None
        await s.put_team(Team("t", "T"))

    run(url, body, read_timeout=1.0, write_timeout=1.0)


def test_postgres_restart_between_calls_is_invisible_to_reads(postgres_server: Any) -> None:
    url = fresh_postgres_db(postgres_server.dsn)

    async def body(s: Store) -> None:
        await s.put_key(make_key())
        await asyncio.gather(*(s.get_key("k1") for _ in range(5)))  # fill the pool
        postgres_server.stop()
        postgres_server.start()
        assert (await s.get_key("k1")) is not None  # pooled connections are stale by now
        await s.put_team(Team("t", "T"))

    run(url, body)


def test_unresponsive_database_times_out_instead_of_hanging() -> None:
    with socket.socket() as sink:  # accepts TCP connections, never says a word
        sink.bind(("127.0.0.1", 0))
        sink.listen(16)
        port = sink.getsockname()[1]

        async def main() -> float:
            store = open_store(f"postgresql://qiao@127.0.0.1:{port}/qiao", read_timeout=0.5)
            started = time.monotonic()
            try:
                with pytest.raises(StorageUnavailable):
                    await store.get_key_by_hash(b"x")
                return time.monotonic() - started
            finally:
                await store.close()

        assert 0.4 < asyncio.run(main()) < 1.5


def test_sqlite_locked_by_another_writer_times_out_while_reads_go_on(tmp_path: Path) -> None:
    path = tmp_path / "qiao.db"

    async def main() -> None:
        store = open_store(str(path), write_timeout=0.3)
        try:
            await store.migrate()
            await store.put_key(make_key())
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            try:
                started = time.monotonic()
                with pytest.raises(StorageUnavailable):
                    await store.put_team(Team("t", "T"))
                assert time.monotonic() - started < 1.0
                assert await store.get_key("k1") is not None  # WAL: readers are not blocked
            finally:
                other.execute("ROLLBACK")
                other.close()
            await store.put_team(Team("t", "T"))
        finally:
            await store.close()

    asyncio.run(main())


# --- what lands on disk


def test_sqlite_file_holds_key_hashes_never_key_secrets(tmp_path: Path) -> None:
    path = tmp_path / "qiao.db"
    secret = b"sk-live-secret-7f3a9c1e5b2d4f60"
    digest = hashlib.sha256(secret).digest()

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("qiao.db"))

    async def main() -> bytes:
        store = open_store(f"sqlite:///{path}")
        try:
            await store.migrate()
            await store.put_key(VirtualKey("k1", "live", digest, "sk-…4f60"))
            return on_disk()  # while open: the row sits in qiao.db-wal
        finally:
            await store.close()

    while_open = asyncio.run(main())
    assert digest in while_open and secret not in while_open
    after_close = on_disk()
    assert digest in after_close and secret not in after_close
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)
    assert path.stat().st_mode & 0o777 == 0o600


# --- choosing a backend


@pytest.mark.parametrize(
    ("url", "backend", "driver"),
    [
        ("memory://", MemoryStore, None),
        ("sqlite:///./qiao.db", SqlStore, "sqlite+pysqlite"),
        ("data/qiao.db", SqlStore, "sqlite+pysqlite"),
        ("/var/lib/qiao/qiao.db", SqlStore, "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///./qiao.db", SqlStore, "sqlite+aiosqlite"),
        ("postgresql://u:p@db:5432/qiao", SqlStore, "postgresql+asyncpg"),
        ("postgres://u@db/qiao", SqlStore, "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db/qiao", SqlStore, "postgresql+asyncpg"),
    ],
)
def test_open_store_chooses_the_backend_by_url(url: str, backend: type, driver: str | None) -> None:
    store = open_store(url)
    assert isinstance(store, backend)
    if isinstance(store, SqlStore):
        assert store.url.drivername == driver
        assert "p@" not in repr(store)
        asyncio.run(store.close())


@pytest.mark.parametrize("url", ["mysql://u@db/qiao", "sqlite:///:memory:", "sqlite://"])
def test_open_store_refuses_what_it_cannot_serve(url: str) -> None:
    with pytest.raises(ValueError):
        open_store(url)


def test_head_revision_constant_matches_the_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from qiao.storage.sql import HEAD_REVISION, MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
