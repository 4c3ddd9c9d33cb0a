"""The sweeper: attempts left pending by a process gone for good become interrupted, from any
node, on every backend, in bounded batches, without touching live or settled attempts."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from services import fresh_postgres_db

from qiao.storage import Store, open_store
from qiao.storage.base import StorageUnavailable
from qiao.storage.models import UsageRecord
from qiao.storage.sweeper import PendingSweeper

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOTAL = 900.0  # the longest total timeout; the sweeper gives up on an attempt past this


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qiao.db'}"
    return fresh_postgres_db(request.getfixturevalue("postgres_server").dsn)


def run(url: str, body: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = open_store(url, clock=lambda: NOW)
        try:
            await store.migrate()
            await asyncio.wait_for(body(store), 60)
        finally:
            await store.close()

    asyncio.run(main())


def attempt(name: str, age: float, status: Any = "pending", tokens: int = 0) -> UsageRecord:
    return UsageRecord(
        attempt_id=name,
        request_id="r-" + name,
        key_id="k1",
        team_id=None,
        model="m",
        provider="p",
        status=status,
        output_tokens=tokens,
        cost=Decimal("0.5") if tokens else Decimal(0),
        started_at=NOW - timedelta(seconds=age),
    )


async def statuses(store: Store) -> dict[str, tuple[str, int, Decimal]]:
    rows = await store.list_usage(limit=10_000)
    return {r.attempt_id: (r.status, r.output_tokens, r.cost) for r in rows}


def sweeper(store: Store, batch: int = 500) -> PendingSweeper:
    return PendingSweeper(store, older_than=TOTAL + 60, batch=batch, clock=lambda: NOW)


def test_only_attempts_pending_past_the_deadline_are_interrupted(url: str) -> None:
    async def body(store: Store) -> None:
        await store.write_usage(
            [
                attempt("dead", TOTAL + 120, tokens=42),  # a stream whose process died
                attempt("live", TOTAL - 10),  # a long stream still running somewhere
                attempt("done", TOTAL + 120, "ok", tokens=7),
                attempt("failed", TOTAL + 120, "error"),
            ]
        )
        assert await sweeper(store).sweep() == 1
        rows = await statuses(store)
        assert rows["dead"] == ("interrupted", 42, Decimal("0.5"))  # what it had relayed
        assert rows["live"][0] == "pending"
        assert rows["done"] == ("ok", 7, Decimal("0.5")) and rows["failed"][0] == "error"
        got = {r.attempt_id: r for r in await store.list_usage()}
        assert got["dead"].finished_at == NOW
        assert await sweeper(store).sweep() == 0  # sweeping again changes nothing

    run(url, body)


def test_a_late_settle_still_wins(url: str) -> None:
    async def body(store: Store) -> None:
        await store.write_usage([attempt("slow", TOTAL + 120)])
        await sweeper(store).sweep()
        await store.write_usage([attempt("slow", TOTAL + 120, "ok", tokens=9)])
        assert (await statuses(store))["slow"] == ("ok", 9, Decimal("0.5"))
        await store.write_usage([attempt("slow", TOTAL + 120)])  # a late pending does not
        assert (await statuses(store))["slow"][0] == "ok"

    run(url, body)


def test_sweeps_in_bounded_batches_until_none_is_left(url: str) -> None:
    calls: list[int] = []

    async def body(store: Store) -> None:
        await store.write_usage([attempt(f"a{i:02d}", TOTAL + 100 + i) for i in range(25)])
        inner = store.interrupt_stale

        async def counted(before: datetime, limit: int) -> int:
            marked = await inner(before, limit)
            calls.append(marked)
            return marked

        store.interrupt_stale = counted  # type: ignore[method-assign]
        assert await sweeper(store, batch=10).sweep() == 25
        assert calls == [10, 10, 5]
        assert {s for s, _, _ in (await statuses(store)).values()} == {"interrupted"}

    run(url, body)


def test_nodes_sweeping_at_once_agree(url: str) -> None:
    async def body(store: Store) -> None:
        await store.write_usage([attempt(f"a{i:03d}", TOTAL + 100 + i) for i in range(300)])
        counts = await asyncio.gather(*(sweeper(store, batch=20).sweep() for _ in range(4)))
        assert sum(counts) == 300
        assert {s for s, _, _ in (await statuses(store)).values()} == {"interrupted"}

    run(url, body)


def test_sqlite_finds_them_through_the_partial_index(tmp_path: Path) -> None:
    run(f"sqlite:///{tmp_path / 'qiao.db'}", lambda store: asyncio.sleep(0))
    conn = sqlite3.connect(tmp_path / "qiao.db")
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT attempt_id FROM usage"
        " WHERE usage.status = 'pending' AND usage.started_at < ? ORDER BY usage.started_at",
        ("2026-01-01 00:00:00",),
    ).fetchall()
    assert any("ix_usage_pending" in str(row) for row in plan), plan


def test_the_sweeper_runs_on_its_own_and_survives_an_outage() -> None:
    class Store:
        def __init__(self) -> None:
            self.calls = 0
            self.third = asyncio.Event()

        async def interrupt_stale(self, started_before: datetime, limit: int) -> int:
            self.calls += 1
            if self.calls == 3:
                self.third.set()
            if self.calls == 1:
                raise StorageUnavailable("database is down")
            return 0

    async def main() -> None:
        store = Store()
        s = PendingSweeper(store, older_than=1, interval=0.01)
        s.start()
        try:
            await asyncio.wait_for(store.third.wait(), 60)  # it went on after the outage
        finally:
            await s.close()

    asyncio.run(main())
