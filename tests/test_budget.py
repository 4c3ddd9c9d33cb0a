"""Budgets: the concurrency race, refunds, soft alerts, UTC periods, token budgets, prepaid
quotas — on the memory store and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from qiao.policies.budget import (
    EPOCH,
    BudgetAlert,
    BudgetExceeded,
    BudgetGuard,
    Charge,
    SpendLedger,
    budget_scopes,
    period_end,
    period_start,
)
from qiao.policies.local_spend import WriteBehindLedger
from qiao.policies.redis_spend import RedisSpendLedger
from qiao.pricing import Money
from qiao.storage.memory import MemoryStore
from qiao.storage.models import Budget, Period, Team, VirtualKey

D = Decimal
NewLedger = Callable[[], AbstractAsyncContextManager[SpendLedger]]


class Now:
    def __init__(self, at: datetime = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(params=["memory", "redis"])
def new_ledger(request: pytest.FixtureRequest) -> NewLedger:
    if request.param == "memory":

        @contextlib.asynccontextmanager
        async def memory() -> AsyncIterator[SpendLedger]:
            yield MemoryStore()

        return memory
    url = request.getfixturevalue("redis_server").url

    @contextlib.asynccontextmanager
    async def redis() -> AsyncIterator[SpendLedger]:
        client = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=20))
        try:
            yield RedisSpendLedger(client, prefix=f"test:{uuid.uuid4().hex}:", timeout=5)
        finally:
            await client.aclose()

    return redis


USD1 = Budget(D("1.00"), "USD", "month", hard=True)


# ----------------------------------------------------------------------------- the race


def test_race_admits_exactly_ten_of_fifty(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())

            async def request() -> bool:
                try:
                    await guard.reserve([("key:a", USD1)], Charge(usd=D("0.10")))
                except BudgetExceeded:
                    return False
                return True

            admitted = sum(await asyncio.gather(*(request() for _ in range(50))))
            assert admitted == 10
            assert await guard.spent("key:a", USD1) == D("1.00")

    asyncio.run(main())


def test_race_with_settlements_never_overdraws(new_ledger: NewLedger) -> None:
    """50 concurrent clients, $0.10 maximum each, real costs $0.05–$0.10, settled after a
    random delay: the spend never passes the budget and ends as the sum of real costs."""
    rng = random.Random(7)

    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            costs: list[Decimal] = []
            peak = D(0)

            async def client() -> None:
                nonlocal peak
                for _ in range(5):
                    try:
                        ticket = await guard.reserve([("key:a", USD1)], Charge(usd=D("0.10")))
                    except BudgetExceeded:
                        return
                    peak = max(peak, await guard.spent("key:a", USD1))
                    await asyncio.sleep(rng.random() / 100)
                    cost = D(rng.randint(50, 100)) / 1000
                    await guard.settle(ticket, Charge(usd=cost))
                    costs.append(cost)

            await asyncio.gather(*(client() for _ in range(50)))
            spent = await guard.spent("key:a", USD1)
            assert spent == sum(costs) and D(0) <= spent <= D("1.00")
            assert peak <= D("1.00")  # the balance never went negative

    asyncio.run(main())


def test_underestimate_overshoots_by_at_most_what_was_underestimated(
    new_ledger: NewLedger,
) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            tickets = []
            for _ in range(10):
                tickets.append(await guard.reserve([("key:a", USD1)], Charge(usd=D("0.10"))))
            with pytest.raises(BudgetExceeded):
                await guard.reserve([("key:a", USD1)], Charge(usd=D("0.10")))
            await guard.settle(tickets[0], Charge(usd=D("0.15")))  # the maximum was wrong
            assert await guard.spent("key:a", USD1) == D("1.05")
            with pytest.raises(BudgetExceeded):
                await guard.reserve([("key:a", USD1)], Charge())  # over: even free is refused

    asyncio.run(main())


# ----------------------------------------------------------------------------- settle, scopes


def test_settle_refunds_and_is_idempotent(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            ticket = await guard.reserve([("key:a", USD1)], Charge(usd=D("0.60")))
            with pytest.raises(BudgetExceeded):
                await guard.reserve([("key:a", USD1)], Charge(usd=D("0.50")))
            await guard.settle(ticket, Charge(usd=D("0.20")))
            await guard.settle(ticket, Charge(usd=D("0.20")))
            assert await guard.spent("key:a", USD1) == D("0.20")
            await guard.reserve([("key:a", USD1)], Charge(usd=D("0.80")))

    asyncio.run(main())


def test_reset_with_requests_in_flight_never_goes_negative(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            in_flight = await guard.reserve([("key:a", USD1)], Charge(usd=D("0.60")))
            await guard.reset("key:a", USD1)  # an admin top-up while the request runs
            assert await guard.spent("key:a", USD1) == 0
            await guard.settle(in_flight, Charge(usd=D("0.20")))
            assert await guard.spent("key:a", USD1) == D("0.20")  # its real cost, no refund

    asyncio.run(main())


def test_in_place_reserve_and_settle_match_the_waiting_path() -> None:
    """The write-behind ledger of a single process reserves and settles without waiting."""

    async def main() -> None:
        ledger = WriteBehindLedger(MemoryStore())
        guard = BudgetGuard(ledger, clock=Now())
        assert guard.reserve_now([("key:a", USD1)], Charge(usd=D("0.60"))) is None  # not loaded
        first = await guard.reserve([("key:a", USD1)], Charge(usd=D("0.60")))
        with pytest.raises(BudgetExceeded):
            guard.reserve_now([("key:a", USD1)], Charge(usd=D("0.50")))
        assert guard.settle_now(first, Charge(usd=D("0.10")))
        second = guard.reserve_now([("key:a", USD1)], Charge(usd=D("0.50")))
        assert second is not None and await guard.spent("key:a", USD1) == D("0.60")
        await guard.reset("key:a", USD1)
        assert guard.settle_now(second, Charge(usd=D("0.30")))
        assert await guard.spent("key:a", USD1) == D("0.30")
        await ledger.close()

    asyncio.run(main())


def test_scopes_are_all_or_nothing_and_each_takes_its_currency(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            team = Budget(D("5"), "CNY", "month")
            scopes = [("key:a", USD1), ("team:t", team)]
            charge = Charge.of(Money(D("0.10"), "USD"), tokens=0, usd_cny=D("7.1"))
            assert charge == Charge(usd=D("0.10"), cny=D("0.710"))
            for _ in range(7):
                await guard.reserve(scopes, charge)  # ¥4.97 of ¥5
            with pytest.raises(BudgetExceeded) as refused:
                await guard.reserve(scopes, charge)
            assert refused.value.scope == "team:t"
            assert await guard.spent("key:a", USD1) == D("0.70")  # key's hold given back
            assert await guard.spent("team:t", team) == D("4.97")

    asyncio.run(main())


def test_token_budget(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            budget = Budget(D(1000), "tokens", "day")
            first = await guard.reserve([("key:a", budget)], Charge(tokens=400))
            await guard.reserve([("key:a", budget)], Charge(tokens=400))
            with pytest.raises(BudgetExceeded):
                await guard.reserve([("key:a", budget)], Charge(tokens=400))
            await guard.settle(first, Charge(tokens=100))
            await guard.reserve([("key:a", budget)], Charge(tokens=400))
            assert await guard.spent("key:a", budget) == D(900)

    asyncio.run(main())


def test_prepaid_quota_never_resets(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            now = Now()
            guard = BudgetGuard(ledger, clock=now)
            quota = Budget(D("0.30"), "USD", "total")
            for _ in range(3):
                await guard.reserve([("key:p", quota)], Charge(usd=D("0.10")))
            now.at += timedelta(days=400)
            with pytest.raises(BudgetExceeded) as refused:
                await guard.reserve([("key:p", quota)], Charge(usd=D("0.10")))
            assert refused.value.retry_after is None and refused.value.status == 429
            await guard.reset("key:p", quota)  # an admin top-up
            await guard.reserve([("key:p", quota)], Charge(usd=D("0.10")))

    asyncio.run(main())


def test_daily_budget_resets_at_utc_midnight(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            now = Now(datetime(2026, 3, 18, 23, 59, 30, tzinfo=UTC))
            guard = BudgetGuard(ledger, clock=now)
            daily = Budget(D("0.10"), "USD", "day")
            await guard.reserve([("key:a", daily)], Charge(usd=D("0.10")))
            with pytest.raises(BudgetExceeded) as refused:
                await guard.reserve([("key:a", daily)], Charge(usd=D("0.10")))
            assert refused.value.retry_after == 30
            now.at += timedelta(seconds=30)
            await guard.reserve([("key:a", daily)], Charge(usd=D("0.10")))

    asyncio.run(main())


# ----------------------------------------------------------------------------- soft budgets


def test_soft_budget_alerts_at_80_and_100_once_per_period(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            now = Now()
            alerts: list[BudgetAlert] = []
            guard = BudgetGuard(ledger, clock=now, on_alert=alerts.append)
            soft = Budget(D("1.00"), "USD", "month", hard=False)

            async def spend(usd: str) -> list[int]:
                await guard.reserve([("team:s", soft)], Charge(usd=D(usd)))
                return [a.percent for a in alerts]

            assert await spend("0.50") == []
            assert await spend("0.29") == []
            assert await spend("0.01") == [80]  # exactly 80 %
            assert await spend("0.10") == [80]
            assert await spend("0.10") == [80, 100]  # exactly 100 %
            assert await spend("5.00") == [80, 100]  # never refuses, never repeats
            assert alerts[0].period_start == datetime(2026, 3, 1, tzinfo=UTC)
            now.at = datetime(2026, 4, 2, tzinfo=UTC)  # a new month
            assert await spend("1.50") == [80, 100, 80, 100]
            assert await guard.spent("team:s", soft) == D("1.50")

    asyncio.run(main())


# ----------------------------------------------------------------------------- periods


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", "2026-03-15T23:59:59.999999+00:00", "2026-03-15", "2026-03-16"),
        ("day", "2026-03-16T07:00:00+08:00", "2026-03-15", "2026-03-16"),  # Beijing morning
        ("week", "2026-03-15T12:00:00+00:00", "2026-03-09", "2026-03-16"),  # a Sunday
        ("week", "2026-03-16T00:00:00+00:00", "2026-03-16", "2026-03-23"),  # a Monday
        ("month", "2026-02-28T23:00:00+00:00", "2026-02-01", "2026-03-01"),
        ("month", "2026-12-31T12:00:00+00:00", "2026-12-01", "2027-01-01"),
    ],
)
def test_period_boundaries_are_utc(period: Period, now: str, start: str, end: str) -> None:
    begins = period_start(period, datetime.fromisoformat(now))
    assert begins == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert period_end(period, begins) == datetime.fromisoformat(end).replace(tzinfo=UTC)


def test_total_period_and_naive_datetimes() -> None:
    at = datetime(2026, 3, 18, tzinfo=timezone(timedelta(hours=-5)))
    assert period_start("total", at) == EPOCH and period_end("total", EPOCH) is None
    with pytest.raises(ValueError):
        period_start("day", datetime(2026, 3, 18))


def test_budget_scopes_of_key_and_team() -> None:
    key = VirtualKey(id="k1", name="k", key_hash=b"", hint="", budget=USD1)
    team = Team(id="t1", name="t", budget=Budget(D(5), "CNY", "day"))
    assert budget_scopes(key, team) == [("key:k1", USD1), ("team:t1", team.budget)]
    assert budget_scopes(VirtualKey(id="k2", name="k", key_hash=b"", hint=""), None) == []


# ----------------------------------------------------------------------------- money hygiene


@pytest.mark.parametrize(
    "bad",
    [
        {"usd": D("NaN")},
        {"usd": D("-0.01")},
        {"cny": D("Infinity")},
        {"usd": 0.1},
        {"tokens": -1},
        {"tokens": 1.5},
        {"usd": "0.10"},
    ],
)
def test_charge_refuses_nan_inf_negative_and_float(bad: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Charge(**bad)  # type: ignore[arg-type]


def test_redis_ledger_keeps_exact_integer_units(redis_server: object) -> None:
    url = redis_server.url  # type: ignore[attr-defined]

    async def main() -> None:
        client = Redis.from_url(url)
        ledger = RedisSpendLedger(client, prefix=f"test:{uuid.uuid4().hex}:")
        start = datetime(2026, 3, 1, tzinfo=UTC)
        for _ in range(3):
            assert await ledger.reserve_spend("key:a", start, D("0.1"), D("0.3"))
        assert not await ledger.reserve_spend("key:a", start, D("0.000000001"), D("0.3"))
        assert await ledger.get_spend("key:a", start) == D("0.3")  # not 0.30000000000000004
        await ledger.adjust_spend("key:a", start, D("0.0000000001"))  # sub-unit: rounds up
        raw = await client.get(f"{ledger._prefix}key:a:2026-03-01")
        assert raw == b"300000001"
        assert 0 < await client.pttl(f"{ledger._prefix}key:a:2026-03-01")
        await ledger.reserve_spend("key:p", EPOCH, D(1), None)
        assert await client.pttl(f"{ledger._prefix}key:p:1970-01-01") == -1  # prepaid: kept
        await client.aclose()

    asyncio.run(main())
