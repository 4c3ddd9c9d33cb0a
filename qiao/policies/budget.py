"""Spend budgets and prepaid quotas: reserve what a request may spend, settle its real cost.

A budget (:class:`~qiao.storage.models.Budget`) caps the spend of a scope (``key:ID``,
``team:ID``) per UTC period — day, ISO week (from Monday), month, or ``total`` (never resets:
a one-api-style prepaid quota). Its unit is USD, CNY or tokens; :class:`Charge` carries a
request's cost in all three so each budget takes its own.

A hard budget reserves a request's maximum cost *bounded by what remains*: the whole maximum
when it fits, else the rest of the budget. A request is refused only when nothing remains
(spend ≥ amount). The input estimate alone is not used to refuse: it is the body size / 4, and
an image or a base64 document counts as far more text than it costs. So a small budget serves
small requests until it is spent, and the one request that finds it nearly spent overshoots by
at most its own maximum; its real cost is recorded, and the next request is refused.

Reservation is atomic per scope (a Redis Lua script, or the ledger's conditional
``UPDATE … WHERE spend + ? <= limit`` retried with what remains), so reservations never take a
hard budget past its amount; spend passes it only by what settled costs exceed their
reservations. A request with several scopes reserves them in order and gives back what it took
if a later scope refuses.

Soft budgets never refuse; the first reservation that takes a period's spend to (or past)
80 % and 100 % calls ``on_alert`` once (per process; the alert carries its period so a sink
can drop duplicates). Alerts count reservations in flight, so they may fire slightly early.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol, runtime_checkable

from ..errors import ClientError, Unavailable
from ..pricing import Money, check_amount, convert
from ..storage.base import StorageUnavailable
from ..storage.models import Budget, Currency, Period, Team, VirtualKey

__all__ = [
    "EPOCH",
    "FREE",
    "BudgetAlert",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetTicket",
    "Charge",
    "SpendLedger",
    "budget_scopes",
    "period_end",
    "period_start",
]

log = logging.getLogger("qiao.budget")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the one period of a ``total`` budget
_ZERO = Decimal(0)
_NANO = Decimal("1e-9")  # the stores' resolution
_ALERT_AT = ((80, Decimal("0.8")), (100, Decimal(1)))
_TRIES = 4  # conditional reservations of what remains before a contended scope refuses


def period_start(period: Period, now: datetime) -> datetime:
    """The UTC start of the period containing ``now`` (which must be timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("period_start needs a timezone-aware datetime")
    if period == "total":
        return EPOCH
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}")


def period_end(period: Period, start: datetime) -> datetime | None:
    """When the period that began at ``start`` ends (None: a ``total`` budget never resets)."""
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    if period == "total":
        return None
    raise ValueError(f"unknown budget period {period!r}")


class BudgetUnavailable(Unavailable):
    """A hard budget applies but its ledger cannot be reached: refused (503, retry shortly),
    never served unchecked — an outage must not turn a prepaid quota into an open one."""

    code = "budget_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The budget ledger is unavailable, so this key's budget cannot be checked; "
            "try again shortly.",
            retry_after=2,
        )


@dataclass(frozen=True, slots=True)
class Charge:
    """What a request costs — or may cost at most — in each budget unit."""

    usd: Decimal = _ZERO
    cny: Decimal = _ZERO
    tokens: int = 0

    def __post_init__(self) -> None:
        if self.usd is not _ZERO:
            check_amount(self.usd, "usd")
        if self.cny is not _ZERO:
            check_amount(self.cny, "cny")
        if type(self.tokens) is not int or self.tokens < 0:
            raise ValueError(f"tokens must be a non-negative int, got {self.tokens!r}")

    @classmethod
    def of(cls, money: Money, *, tokens: int, usd_cny: Decimal) -> Charge:
        """``money`` in both currencies at ``usd_cny`` yuan per dollar, plus ``tokens``."""
        if money.currency == "USD":
            return cls(money.amount, convert(money, "CNY", usd_cny).amount, tokens)
        return cls(convert(money, "USD", usd_cny).amount, money.amount, tokens)

    def amount(self, currency: Currency) -> Decimal:
        if currency == "USD":
            return self.usd
        if currency == "CNY":
            return self.cny
        if currency == "tokens":
            return Decimal(self.tokens)
        raise ValueError(f"unknown budget currency {currency!r}")


FREE = Charge()  # settling a ticket at FREE gives its whole reservation back


def budget_scopes(key: VirtualKey, team: Team | None) -> list[tuple[str, Budget]]:
    """The budgets one request draws on: its key's and its team's."""
    scopes: list[tuple[str, Budget]] = []
    if key.budget is not None:
        scopes.append((f"key:{key.id}", key.budget))
    if team is not None and team.budget is not None:
        scopes.append((f"team:{team.id}", team.budget))
    return scopes


class SpendLedger(Protocol):
    """Atomic spend counters per (scope, period start). :class:`qiao.storage.base.Store`
    satisfies it; :class:`~.redis_spend.RedisSpendLedger` is the Redis one."""

    async def reserve_spend(
        self, scope: str, period_start: datetime, amount: Decimal, limit: Decimal | None
    ) -> bool: ...

    async def adjust_spend(self, scope: str, period_start: datetime, delta: Decimal) -> None: ...

    async def get_spend(self, scope: str, period_start: datetime) -> Decimal: ...


@runtime_checkable
class InPlaceLedger(Protocol):
    """A ledger whose counters live in this process (:class:`~.local_spend.WriteBehindLedger`):
    budgets can reserve and settle without waiting once a counter is loaded."""

    def spent_now(self, scope: str, period_start: datetime) -> Decimal | None: ...

    def adjust_spend_now(self, scope: str, period_start: datetime, delta: Decimal) -> bool: ...


ReserveUpTo = Callable[[str, datetime, Decimal, Decimal], Awaitable[Decimal | None]]


class BudgetExceeded(ClientError):
    """A hard budget refused the request (OpenAI's ``insufficient_quota``: 429)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, scope: str, budget: Budget, retry_after: float | None) -> None:
        owner = scope.split(":", 1)[0]
        when = "" if budget.period == "total" else f" for this {budget.period}"
        super().__init__(
            f"Budget exceeded: this {owner} has used its {budget.amount} {budget.currency}{when}.",
            retry_after=retry_after,
        )
        self.scope = scope
        self.budget = budget


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    scope: str
    budget: Budget
    period_start: datetime
    percent: int  # 80 or 100


@dataclass(slots=True)
class _Hold:
    scope: str
    currency: Currency
    start: datetime
    amount: Decimal
    resets: int = 0  # the scope's reset count when reserved: a reset since wiped this hold


@dataclass(slots=True, eq=False)
class BudgetTicket:
    holds: tuple[_Hold, ...]
    settled: bool = False


def _utcnow() -> datetime:
    return datetime.now(UTC)


class BudgetGuard:
    def __init__(
        self,
        ledger: SpendLedger,
        *,
        clock: Callable[[], datetime] = _utcnow,
        on_alert: Callable[[BudgetAlert], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._in_place = ledger if isinstance(ledger, InPlaceLedger) else None
        # A ledger may reserve "up to" in one atomic call (Redis); else it is built here.
        upto: ReserveUpTo | None = getattr(ledger, "reserve_spend_upto", None)
        self._reserve_upto: ReserveUpTo = upto or self._reserve_remaining
        self._clock = clock
        self._on_alert = on_alert
        self._alerted: dict[str, tuple[datetime, int]] = {}  # soft scope -> (period, percent)
        self._periods: dict[Period, tuple[datetime, datetime | None]] = {}  # start, end
        self._resets: dict[str, int] = {}  # scope -> resets so far (see _held)
        self._down_logged: datetime | None = None  # when an unreachable ledger was last logged

    def reserve_now(
        self, scopes: Sequence[tuple[str, Budget]], max_cost: Charge
    ) -> BudgetTicket | None:
        """:meth:`reserve` without waiting, when the ledger keeps its counters in this process
        and every scope is hard and loaded; None if it cannot (nothing reserved). Every scope
        is checked before any is taken: nothing can change in between (no await)."""
        ledger = self._in_place
        if ledger is None:
            return None
        now = self._clock()
        holds: list[_Hold] = []
        for scope, budget in scopes:
            if not budget.hard:
                return None
            start = self._period_start(budget.period, now)
            spent = ledger.spent_now(scope, start)
            if spent is None:
                return None  # not loaded yet: the waiting path loads it
            left = budget.amount - spent
            if left <= 0:
                raise BudgetExceeded(scope, budget, _until_end(budget.period, start, now))
            amount = min(max_cost.amount(budget.currency), left)
            holds.append(_Hold(scope, budget.currency, start, amount, self._resets.get(scope, 0)))
        for hold in holds:
            ledger.adjust_spend_now(hold.scope, hold.start, hold.amount)
        return BudgetTicket(tuple(holds))

    async def reserve(self, scopes: Sequence[tuple[str, Budget]], max_cost: Charge) -> BudgetTicket:
        """Reserve ``max_cost`` — or what remains of a hard budget, if less — in every scope or
        in none; raise :class:`BudgetExceeded` if a hard budget has nothing left."""
        now = self._clock()
        holds: list[_Hold] = []
        try:
            for scope, budget in scopes:
                amount = max_cost.amount(budget.currency)
                start = self._period_start(budget.period, now)
                if budget.hard:
                    try:
                        taken = await self._reserve_upto(scope, start, amount, budget.amount)
                    except StorageUnavailable as exc:
                        self._ledger_down(exc)
                        raise BudgetUnavailable() from None
                    if taken is None:
                        raise BudgetExceeded(scope, budget, _until_end(budget.period, start, now))
                    amount = taken
                else:
                    try:
                        await self._reserve_soft(scope, budget, start, amount)
                    except StorageUnavailable as exc:  # alerts only: serve, say so
                        self._ledger_down(exc)
                        continue
                holds.append(
                    _Hold(scope, budget.currency, start, amount, self._resets.get(scope, 0))
                )
        except BaseException:
            await self._release(holds)
            raise
        return BudgetTicket(tuple(holds))

    def _ledger_down(self, exc: StorageUnavailable) -> None:
        """Log an unreachable ledger at most once a minute (it is seen on every request)."""
        now = self._clock()
        if self._down_logged is None or now - self._down_logged >= timedelta(minutes=1):
            self._down_logged = now
            log.warning("budget ledger unavailable (%s): hard budgets refuse, soft ones serve", exc)

    async def _reserve_remaining(
        self, scope: str, start: datetime, amount: Decimal, limit: Decimal
    ) -> Decimal | None:
        """Reserve ``amount``, or what remains below ``limit`` if less, with the ledger's
        conditional reservation alone: the whole amount in one call when it fits; else read
        the spend and reserve the rest on the condition that it still fits. None: nothing
        remains (or the scope stayed contended for every try — refusing never overdraws)."""
        take = amount
        for _ in range(_TRIES):
            if await self._ledger.reserve_spend(scope, start, take, limit):
                return take
            left = limit - await self._ledger.get_spend(scope, start)
            if left <= 0:
                return None
            take = min(amount, left)
        return None

    def settle_now(self, ticket: BudgetTicket, actual_cost: Charge) -> bool:
        """:meth:`settle` without waiting, when the ledger keeps its counters in this process
        (:class:`~.local_spend.WriteBehindLedger`); False if it cannot (nothing done)."""
        ledger = self._in_place
        if ledger is None:
            return False
        if ticket.settled:
            return True
        holds = ticket.holds
        for i, hold in enumerate(holds):
            delta = actual_cost.amount(hold.currency) - self._held(hold)
            if delta and not ledger.adjust_spend_now(hold.scope, hold.start, delta):
                if i:  # cannot happen (reserving loaded them all); keep it whole anyway
                    log.warning("budget settle of %s fell back to waiting", hold.scope)
                ticket.holds = holds[i:]
                return False
        ticket.settled = True
        return True

    async def settle(self, ticket: BudgetTicket, actual_cost: Charge) -> None:
        """Replace each reservation by the real cost (a refund when it cost less); idempotent."""
        if ticket.settled:
            return
        ticket.settled = True
        for hold in ticket.holds:
            delta = actual_cost.amount(hold.currency) - self._held(hold)
            if delta:
                await self._ledger.adjust_spend(hold.scope, hold.start, delta)

    def _period_start(self, period: Period, now: datetime) -> datetime:
        """:func:`period_start`, remembered until the period ends (it runs on every request)."""
        known = self._periods.get(period)
        if known is not None and known[0] <= now and (known[1] is None or now < known[1]):
            return known[0]
        start = period_start(period, now)
        self._periods[period] = (start, period_end(period, start))
        return start

    async def spent(self, scope: str, budget: Budget) -> Decimal:
        """The scope's spend so far in the current period (reservations in flight included)."""
        return await self._ledger.get_spend(scope, period_start(budget.period, self._clock()))

    def _held(self, hold: _Hold) -> Decimal:
        """What ``hold`` still holds in its ledger: nothing once its scope was reset (in this
        process) after it was reserved, so settling then adds the real cost, not a refund."""
        return hold.amount if self._resets.get(hold.scope, 0) == hold.resets else _ZERO

    async def reset(self, scope: str, budget: Budget) -> None:
        """Zero the current period's spend (an admin top-up of a prepaid quota, say). Requests
        in flight here settle their real cost afterwards; ones in flight on other nodes of a
        Redis fleet still refund their reservation, so spend may dip below zero until then."""
        self._resets[scope] = self._resets.get(scope, 0) + 1
        start = period_start(budget.period, self._clock())
        spent = await self._ledger.get_spend(scope, start)
        if spent:
            await self._ledger.adjust_spend(scope, start, -spent)
        self._alerted.pop(scope, None)

    async def _reserve_soft(
        self, scope: str, budget: Budget, start: datetime, amount: Decimal
    ) -> None:
        """Reserve without a limit, but learn which alert thresholds this reservation crosses
        from conditional reservations (one query while under 80 %)."""
        for percent, share in _ALERT_AT:
            if percent <= self._alerted_at(scope, start):
                continue
            below = max(_ZERO, budget.amount * share - _NANO)  # reaching the mark alerts
            if await self._ledger.reserve_spend(scope, start, amount, below):
                return
            self._alert(BudgetAlert(scope, budget, start, percent))
        await self._ledger.reserve_spend(scope, start, amount, None)

    def _alerted_at(self, scope: str, start: datetime) -> int:
        seen = self._alerted.get(scope)
        return seen[1] if seen is not None and seen[0] == start else 0

    def _alert(self, alert: BudgetAlert) -> None:
        if alert.percent <= self._alerted_at(alert.scope, alert.period_start):
            return  # a concurrent request got there first
        self._alerted[alert.scope] = (alert.period_start, alert.percent)
        log.warning(
            "soft budget of %s at %d%% (%s %s per %s)",
            alert.scope,
            alert.percent,
            alert.budget.amount,
            alert.budget.currency,
            alert.budget.period,
        )
        if self._on_alert is not None:
            self._on_alert(alert)

    async def _release(self, holds: list[_Hold]) -> None:
        for hold in holds:
            try:
                await self._ledger.adjust_spend(hold.scope, hold.start, -hold.amount)
            except Exception:  # the refusal matters more; the hold stays as spend
                log.exception("could not release the budget reservation of %s", hold.scope)


def _until_end(period: Period, start: datetime, now: datetime) -> float | None:
    end = period_end(period, start)
    return None if end is None else max(1.0, math.ceil((end - now).total_seconds()))
