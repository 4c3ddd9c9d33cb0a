"""Budgets: the concurrency race, refunds, soft alerts, UTC periods, token budgets, prepaid
quotas — on the memory store and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from gateway import Gateway
from redis.asyncio import BlockingConnectionPool, Redis
from services import RedisServer

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
from qiao.storage import open_store
from qiao.storage.memory import MemoryStore
from qiao.storage.models import Budget, Period, Team, VirtualKey

D = Decimal
NewLedger = Callable[[], AbstractAsyncContextManager[SpendLedger]]


class Now:
    def __init__(self, at: datetime = datetime(2026, 3, 18, 12, 0, tzinfo=UTC)) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(params=["memory", "sqlite", "redis"])
def new_ledger(request: pytest.FixtureRequest) -> NewLedger:
    if request.param == "memory":

        @contextlib.asynccontextmanager
        async def memory() -> AsyncIterator[SpendLedger]:
            yield MemoryStore()

        return memory
    if request.param == "sqlite":
        path = request.getfixturevalue("tmp_path") / "spend.db"

        @contextlib.asynccontextmanager
        async def sqlite() -> AsyncIterator[SpendLedger]:
            store = open_store(f"sqlite:///{path}")
            await store.migrate()
            try:
                yield store  # reserves what remains with conditional UPDATEs
            finally:
                await store.close()

        return sqlite
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


def test_race_with_settlements_overshoots_only_what_was_not_reserved(
    new_ledger: NewLedger,
) -> None:
    """50 concurrent clients, $0.10 maximum each, real costs $0.05–$0.10, settled after a
    random delay: the spend ends as the sum of real costs, and passes the budget by no more
    than the requests admitted on what remained failed to reserve."""
    rng = random.Random(7)

    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            costs: list[Decimal] = []
            unreserved = D(0)  # of requests admitted with less than their maximum

            async def client() -> None:
                nonlocal unreserved
                for _ in range(5):
                    try:
                        ticket = await guard.reserve([("key:a", USD1)], Charge(usd=D("0.10")))
                    except BudgetExceeded:
                        return
                    await asyncio.sleep(rng.random() / 100)
                    cost = D(rng.randint(50, 100)) / 1000
                    unreserved += max(D(0), cost - ticket.holds[0].amount)
                    await guard.settle(ticket, Charge(usd=cost))
                    costs.append(cost)

            await asyncio.gather(*(client() for _ in range(50)))
            spent = await guard.spent("key:a", USD1)
            assert spent == sum(costs) and D("1.00") <= spent <= D("1.00") + unreserved

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
            rest = await guard.reserve([("key:a", USD1)], Charge(usd=D("0.50")))
            assert rest.holds[0].amount == D("0.40")  # what remained
            with pytest.raises(BudgetExceeded):
                await guard.reserve([("key:a", USD1)], Charge(usd=D("0.01")))
            await guard.settle(ticket, Charge(usd=D("0.20")))
            await guard.settle(ticket, Charge(usd=D("0.20")))
            assert await guard.spent("key:a", USD1) == D("0.60")
            await guard.settle(rest, Charge(usd=D("0.10")))
            assert await guard.spent("key:a", USD1) == D("0.30")
            again = await guard.reserve([("key:a", USD1)], Charge(usd=D("0.70")))
            assert again.holds[0].amount == D("0.70")

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
        rest = guard.reserve_now([("key:a", USD1)], Charge(usd=D("0.50")))
        assert rest is not None and rest.holds[0].amount == D("0.40")
        with pytest.raises(BudgetExceeded):
            guard.reserve_now([("key:a", USD1)], Charge(usd=D("0.01")))
        assert guard.settle_now(first, Charge(usd=D("0.10")))
        assert guard.settle_now(rest, Charge())  # given back whole
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
            last = await guard.reserve(scopes, charge)  # each scope bounds its own hold
            assert [h.amount for h in last.holds] == [D("0.10"), D("0.03")]
            with pytest.raises(BudgetExceeded) as refused:
                await guard.reserve(scopes, charge)
            assert refused.value.scope == "team:t"
            assert await guard.spent("key:a", USD1) == D("0.80")  # key's hold given back
            assert await guard.spent("team:t", team) == D("5")

    asyncio.run(main())


def test_token_budget(new_ledger: NewLedger) -> None:
    async def main() -> None:
        async with new_ledger() as ledger:
            guard = BudgetGuard(ledger, clock=Now())
            budget = Budget(D(1000), "tokens", "day")
            first = await guard.reserve([("key:a", budget)], Charge(tokens=400))
            await guard.reserve([("key:a", budget)], Charge(tokens=400))
            third = await guard.reserve([("key:a", budget)], Charge(tokens=400))
            assert third.holds[0].amount == 200  # bounded by what remains
            with pytest.raises(BudgetExceeded):
                await guard.reserve([("key:a", budget)], Charge(tokens=1))
            await guard.settle(first, Charge(tokens=100))
            fourth = await guard.reserve([("key:a", budget)], Charge(tokens=400))
            assert fourth.holds[0].amount == 300
            await guard.settle(third, Charge(tokens=450))  # cost more than it could hold
            assert await guard.spent("key:a", budget) == D(1250)
            with pytest.raises(BudgetExceeded):  # spent past the budget: refused
                await guard.reserve([("key:a", budget)], Charge(tokens=1))

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
        # what remains of a large budget, clamped in the script (exact up to 2⁵³ nano-units)
        big = D("5000000")
        assert await ledger.reserve_spend_upto("key:b", start, D("0.5"), big) == D("0.5")
        taken = await ledger.reserve_spend_upto("key:b", start, big, big)
        assert taken == D("4999999.5")
        assert await ledger.reserve_spend_upto("key:b", start, D(5), big) is None
        assert await ledger.get_spend("key:b", start) == big
        await client.aclose()

    asyncio.run(main())


# ----------------------------------------------------------------------------- over real sockets

GW_ADMIN = "sk-qiao-budget-admin-key-0123456789abcdef"
GW_CONFIG = f"""
admin_key: {GW_ADMIN}
providers: {{mock: {{type: mock}}}}
models: {{qiao-mock: [{{provider: mock}}], gpt-4o-mini: [{{provider: mock}}]}}
"""
# 32 words the mock echoes back: a ~62-token answer whose reservation (body/4 + max_tokens)
# is only ~36 tokens, so one request spends a 40-token budget.
LONG_PROMPT = " ".join(["a"] * 32)


def http(
    gw: Gateway, method: str, path: str, body: object = None, key: str = GW_ADMIN
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One call: (status, JSON body, headers), errors included."""
    req = urllib.request.Request(
        gw.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def new_key(gw: Gateway, **fields: object) -> dict[str, Any]:
    status, key, _ = http(gw, "POST", "/admin/keys", {"name": uuid.uuid4().hex[:8], **fields})
    assert status == 201, key
    return key


def chat(
    gw: Gateway, key: str, model: str = "qiao-mock", **extra: object
) -> tuple[int, dict[str, Any], dict[str, str]]:
    text = extra.pop("text", "hi")
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return http(gw, "POST", "/v1/chat/completions", body, key)


def spent(gw: Gateway, key_id: str) -> Decimal:
    status, shown, _ = http(gw, "GET", f"/admin/keys/{key_id}")
    assert status == 200, shown
    return Decimal(shown["budget_status"]["spent"])


def test_small_token_budget_serves_small_requests_until_spent(budget_gw: Gateway) -> None:
    """No ``max_tokens``: the reservation is bounded by what remains, not input + 4,096."""
    key = new_key(budget_gw, budget={"amount": "1000", "currency": "tokens", "period": "day"})
    used: list[int] = []
    for _ in range(200):
        status, answer, headers = chat(budget_gw, key["key"])
        if status != 200:
            break
        used.append(answer["usage"]["total_tokens"])
    assert status == 429 and answer["error"]["code"] == "insufficient_quota", answer
    assert len(used) >= 2 and sum(used[:-1]) < 1000 <= sum(used)  # refused once spent
    assert 1 <= int(headers["Retry-After"]) <= 86400
    assert spent(budget_gw, key["id"]) == sum(used)  # settled to the real usage


def test_budget_refusals_do_not_use_the_rate_limit(budget_gw: Gateway) -> None:
    key = new_key(
        budget_gw,
        limits={"rpm": 2},
        budget={"amount": "40", "currency": "tokens", "period": "day"},
    )
    status, answer, _ = chat(budget_gw, key["key"], max_tokens=1, text=LONG_PROMPT)
    assert status == 200 and answer["usage"]["total_tokens"] >= 40, answer
    for _ in range(3):
        status, answer, _ = chat(budget_gw, key["key"], max_tokens=1, text=LONG_PROMPT)
        assert status == 429 and answer["error"]["code"] == "insufficient_quota", answer
    status, _, _ = http(budget_gw, "POST", f"/admin/keys/{key['id']}/budget/reset")
    assert status == 200
    status, answer, _ = chat(budget_gw, key["key"], max_tokens=1)
    assert status == 200, answer  # the second of its two requests this minute
    status, answer, headers = chat(budget_gw, key["key"], max_tokens=1)
    assert status == 429 and answer["error"]["code"] == "rate_limit_exceeded", answer
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_rate_limit_refusals_give_their_budget_back(budget_gw: Gateway) -> None:
    key = new_key(budget_gw, limits={"rpm": 1}, budget={"amount": "100000", "currency": "tokens"})
    status, answer, _ = chat(budget_gw, key["key"])
    assert status == 200
    for _ in range(3):
        status, refused, _ = chat(budget_gw, key["key"])
        assert status == 429 and refused["error"]["code"] == "rate_limit_exceeded", refused
    assert spent(budget_gw, key["id"]) == answer["usage"]["total_tokens"]


def test_tiny_usd_budget_serves_a_priced_request_then_refuses(budget_gw: Gateway) -> None:
    key = new_key(budget_gw, budget={"amount": "0.000001", "currency": "USD", "period": "day"})
    status, answer, _ = chat(budget_gw, key["key"], "gpt-4o-mini")
    assert status == 200, answer  # its maximum ($0.0025) is more than remains: bounded
    assert spent(budget_gw, key["id"]) > Decimal("0.000001")  # the real cost, recorded
    status, answer, _ = chat(budget_gw, key["key"], "gpt-4o-mini")
    assert status == 429 and answer["error"]["code"] == "insufficient_quota", answer


@pytest.mark.parametrize("hard", [True, False])
def test_unpriced_model_under_a_money_budget_is_refused(budget_gw: Gateway, hard: bool) -> None:
    budget = {"amount": "0.000001", "currency": "USD", "period": "day", "hard": hard}
    key = new_key(budget_gw, budget=budget)
    status, answer, _ = chat(budget_gw, key["key"], "qiao-mock")
    assert status == 403, answer
    error = answer["error"]
    assert error["code"] == "model_unpriced" and error["type"] == "invalid_request_error"
    assert "'qiao-mock' has no price" in error["message"]
    assert "USD budget cannot be enforced" in error["message"]
    assert spent(budget_gw, key["id"]) == 0
    tokens = new_key(budget_gw, budget={"amount": "1000", "currency": "tokens", "period": "day"})
    assert chat(budget_gw, tokens["key"], "qiao-mock")[0] == 200  # tokens need no price


def test_unpriced_model_priced_at_the_configured_default() -> None:
    config = GW_CONFIG + (
        "pricing: {unpriced: default, default_price: "
        "{currency: USD, input: '1000000', output: '2000000'}}\n"  # $1 / $2 a token
    )
    with Gateway(config) as gw:
        key = new_key(gw, budget={"amount": "100", "currency": "USD", "period": "day"})
        status, answer, _ = chat(gw, key["key"], "qiao-mock")
        assert status == 200, answer
        usage = answer["usage"]
        cost = usage["prompt_tokens"] + 2 * usage["completion_tokens"]
        assert spent(gw, key["id"]) == cost
        while status == 200:
            status, answer, _ = chat(gw, key["key"], "qiao-mock")
        assert status == 429 and answer["error"]["code"] == "insufficient_quota"
        assert spent(gw, key["id"]) >= 100


def test_answer_from_an_unpriced_fallback_is_charged_its_reservation() -> None:
    """The gate prices the first target; a fallback with no price must not make it free."""
    config = GW_CONFIG.replace(
        "models: {",
        "models: {priced: [{provider: down, model: gpt-4o-mini}, "
        "{provider: mock, model: no-price-here}], ",
    ).replace(
        "providers: {mock: {type: mock}}",
        "providers: {mock: {type: mock}, down: {type: openai, base_url: "
        "'http://127.0.0.1:9/v1', api_key: sk-unused-000000}}",
    )
    with Gateway(config) as gw:
        key = new_key(gw, budget={"amount": "100", "currency": "USD", "period": "day"})
        status, answer, headers = chat(gw, key["key"], "priced")
        assert status == 200 and headers["x-qiao-provider"] == "mock", answer
        # its maximum: gpt-4o-mini's price for the input estimate and 4,096 output tokens
        assert spent(gw, key["id"]) > Decimal("4096") * Decimal("0.60") / 1_000_000


@pytest.fixture(scope="module")
def budget_gw() -> Iterator[Gateway]:
    with Gateway(GW_CONFIG) as gw:
        yield gw


def test_redis_ledger_replies_read_late_by_a_busy_loop_are_not_an_outage(
    redis_server: object,
) -> None:
    """Budgets follow the limiter's rule: a reply read late because our own loop is saturated
    is waited for (it used to raise StorageUnavailable after 0.25 s: a 500 under load)."""
    url = redis_server.url  # type: ignore[attr-defined]

    async def main() -> int:
        client = Redis.from_url(url)
        ledger = RedisSpendLedger(
            client, prefix=f"test:{uuid.uuid4().hex}:", timeout=0.05, probe_url=url
        )
        start = datetime(2026, 3, 1, tzinfo=UTC)
        await ledger.reserve_spend("key:a", start, D(1), None)  # connections are open
        loop = asyncio.get_running_loop()
        end = loop.time() + 2.0

        def hog() -> None:  # every loop iteration holds the CPU longer than the timeout
            time.sleep(0.06)
            if loop.time() < end:
                loop.call_soon(hog)

        loop.call_soon(hog)
        calls = [ledger.reserve_spend("key:a", start, D(1), None) for _ in range(100)]
        done = await asyncio.gather(*calls)
        ledger.close()
        await client.aclose()
        return sum(done)

    assert asyncio.run(main()) == 100


def test_unreachable_ledger_refuses_hard_budgets_and_serves_soft_ones() -> None:
    """Redis down: a key with a hard budget gets 503 ``budget_unavailable`` in its caller's
    protocol (it used to get aiohttp's plain-text 500), a soft budget is served."""
    own = RedisServer().start()
    config = f"""
providers: {{m: {{type: mock}}}}
models: {{m: [{{provider: m}}]}}
keys:
  - {{name: hard, key: sk-budget-ledger-hard-0123, budget: {{amount: "100000", currency: tokens, period: day}}}}
  - {{name: soft, key: sk-budget-ledger-soft-0123, budget: {{amount: "100000", currency: tokens, period: day, hard: false}}}}
storage: {{url: "memory://", redis_url: "{own.url}", redis_timeout: 0.2}}
"""
    try:
        with Gateway(config) as gw:
            assert chat(gw, "sk-budget-ledger-hard-0123", "m", max_tokens=5)[0] == 200
            own.close()
            status, body, headers = chat(gw, "sk-budget-ledger-hard-0123", "m", max_tokens=5)
            assert status == 503 and body["error"]["code"] == "budget_unavailable"
            assert headers["Retry-After"] == "2"
            assert chat(gw, "sk-budget-ledger-soft-0123", "m", max_tokens=5)[0] == 200
            req = urllib.request.Request(
                gw.url + "/v1/messages",
                data=json.dumps(
                    {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
                ).encode(),
                headers={
                    "x-api-key": "sk-budget-ledger-hard-0123",
                    "anthropic-version": "2023-06-01",
                    "Content-Type": "application/json",
                },
            )
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(req, timeout=30)
            answer = json.loads(info.value.read())
            assert answer["type"] == "error" and "budget ledger" in answer["error"]["message"]
    finally:
        own.close()
