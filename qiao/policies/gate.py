"""The gate every request passes before it goes upstream: budgets, then rate limits.

Keys with neither limits nor budgets pass at the cost of two attribute checks. Otherwise the
request reserves an estimate (tokens from the body size plus the asked-for output, the most it
may cost; a hard budget takes at most what remains of it) in every scope atomically, and
settles the real figures when the answer is done — including when the client went away.

Order: a model with no price under a money budget is refused first (no I/O); then budgets
reserve, then the limiter takes its request slot, and a limiter refusal gives the budget
reservation back. So a refused request never counts against RPM or TPM: budgets go first
because giving a budget hold back is one counter update (in memory on one process), while
the limiter has no way to give a request slot back. A rate-limited request holds budget only
for the moment between the two; soft-budget alerts may fire early by that much.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

from ..accounting import usage_of
from ..auth import Principal
from ..canonical.types import Usage
from ..errors import PermissionDenied
from ..observability.accesslog import RequestRecord
from ..pricing import Money, PriceTable
from ..storage.models import Budget, Limits
from .budget import FREE, BudgetGuard, BudgetTicket, Charge
from .limits import Limiter, LocalLimiter, Scope, Ticket

__all__ = ["Gate", "ModelUnpriced", "Pass"]

log = logging.getLogger("qiao.gate")

DEFAULT_MAX_OUTPUT = 4096
_OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


class ModelUnpriced(PermissionDenied):
    """A money budget applies but the model has no price (config ``pricing.unpriced``)."""

    code = "model_unpriced"

    def __init__(self, model: str, currency: str) -> None:
        super().__init__(
            f"Model {model!r} has no price, so a {currency} budget cannot be enforced. "
            "Ask the operator to price it or to set pricing.unpriced: default."
        )


@dataclass(slots=True)
class Pass:
    ticket: Ticket | None
    budget: BudgetTicket | None
    model: str
    fiat: bool = False  # a budget in USD or CNY: the answer must be priced (tokens need not)
    reserved: Charge = FREE  # the maximum cost, before budgets bounded it


def _limited(limits: Limits) -> bool:
    return limits.rpm is not None or limits.tpm is not None or limits.concurrency is not None


def limit_scopes(p: Principal, model: str) -> list[Scope]:
    scopes: list[Scope] = []
    if _limited(p.limits):
        scopes.append((f"key:{p.scope_id}", p.limits))
    if p.team_id and _limited(p.team_limits):
        scopes.append((f"team:{p.team_id}", p.team_limits))
    for pattern, limits in p.model_limits.items():
        if _limited(limits) and fnmatchcase(model, pattern):
            scopes.append((f"keymodel:{p.scope_id}:{pattern}", limits))
    return scopes


def budget_scopes(p: Principal) -> list[tuple[str, Budget]]:
    scopes: list[tuple[str, Budget]] = []
    if p.budget is not None:
        scopes.append((f"key:{p.scope_id}", p.budget))
    if p.team_id and p.team_budget is not None:
        scopes.append((f"team:{p.team_id}", p.team_budget))
    return scopes


@dataclass(frozen=True, slots=True)
class _Scopes:
    limits: tuple[Scope, ...]
    budgets: tuple[tuple[str, Budget], ...]
    fiat: bool  # a budget in USD or CNY


_NO_SCOPES = _Scopes((), (), False)
_SCOPES_KEPT = 256  # models remembered per key


def scopes_of(p: Principal, model: str) -> _Scopes:
    """The limit and budget scopes of ``p`` for ``model``, worked out once per key and model
    (a key's principal is replaced, not changed, when its limits change)."""
    cache = p.gate_scopes
    known = cache.get(model)
    if known is None:
        limits, budgets = tuple(limit_scopes(p, model)), tuple(budget_scopes(p))
        fiat = any(budget.currency != "tokens" for _, budget in budgets)
        known = _Scopes(limits, budgets, fiat) if limits or budgets else _NO_SCOPES
        if len(cache) >= _SCOPES_KEPT:
            cache.clear()
        cache[model] = known
    return known


def max_output(body: dict[str, Any]) -> int:
    value = body.get("max_tokens")
    if type(value) is int and value > 0 and "max_completion_tokens" not in body:
        return value  # the common case
    for name in _OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    config = body.get("generationConfig") or body.get("generation_config")
    if isinstance(config, dict):
        value = config.get("maxOutputTokens") or config.get("max_output_tokens")
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_OUTPUT


class Gate:
    def __init__(
        self, limiter: Limiter, budgets: BudgetGuard, prices: PriceTable, usd_cny: Decimal
    ) -> None:
        self.limiter = limiter
        self._local = limiter if isinstance(limiter, LocalLimiter) else None  # never waits
        self._budgets = budgets
        self._prices = prices
        self._usd_cny = usd_cny
        self._pending: set[asyncio.Task[None]] = set()

    def _max_charge(
        self, plan: _Scopes, model: str, upstream_model: str, input_tokens: int, output: int
    ) -> Charge:
        """The most the request may cost; a money budget refuses a model with no price."""
        tokens = input_tokens + output
        if not plan.fiat:
            return Charge(tokens=tokens)
        if self._prices.get(upstream_model) is None:
            currency = next(b.currency for _, b in plan.budgets if b.currency != "tokens")
            raise ModelUnpriced(model, currency)
        money = self._prices.max_cost(upstream_model, input_tokens, output)
        return Charge.of(money, tokens=tokens, usd_cny=self._usd_cny)

    async def admit(
        self, p: Principal, model: str, upstream_model: str, raw_len: int, body: dict[str, Any]
    ) -> Pass | None:
        plan = scopes_of(p, model)
        if plan is _NO_SCOPES:
            return None
        input_estimate = raw_len // 4 + 1
        output = max_output(body)
        charge = FREE
        held: BudgetTicket | None = None
        if plan.budgets:
            charge = self._max_charge(plan, model, upstream_model, input_estimate, output)
            held = self._budgets.reserve_now(plan.budgets, charge)
            if held is None:
                held = await self._budgets.reserve(plan.budgets, charge)
        ticket: Ticket | None = None
        if plan.limits:
            tokens = input_estimate + output
            try:
                if self._local is not None:
                    ticket = self._local.acquire_now(plan.limits, tokens)
                else:
                    ticket = await self.limiter.acquire(plan.limits, tokens=tokens)
            except BaseException:
                if held is not None:
                    await self._give_back(held)
                raise
        return Pass(ticket, held, upstream_model, plan.fiat, charge)

    async def _give_back(self, held: BudgetTicket) -> None:
        """Return a budget reservation whose request was refused after it was taken."""
        try:
            if not self._budgets.settle_now(held, FREE):
                await self._budgets.settle(held, FREE)
        except Exception as exc:  # the refusal matters more; the hold stays as spend
            log.warning("giving a budget reservation back failed: %s", type(exc).__name__)

    def _actual_charge(
        self, admitted: Pass, rec: RequestRecord, usage: Usage, money: Money | None
    ) -> Charge:
        """What the request really cost: priced once by the accounting when the attempt
        settled (``money``), else here. An answer from a target with no price (a fallback the
        gate did not check) keeps its money reservation at the maximum: never free."""
        tokens = usage.input_tokens + usage.output_tokens
        if not admitted.fiat:
            return Charge(tokens=tokens)
        if rec.charged is None:
            model = rec.upstream_model or admitted.model
            if self._prices.get(model) is not None:
                money = self._prices.cost(model, usage)
        if money is None:
            return Charge(admitted.reserved.usd, admitted.reserved.cny, tokens)
        return Charge.of(money, tokens=tokens, usd_cny=self._usd_cny)

    def release(self, admitted: Pass, rec: RequestRecord) -> None:
        """Settle with the real usage: at once when the limiter and the spend counters are in
        this process, else as a task of its own, so a cancelled handler still settles."""
        try:
            charged = rec.charged
            usage, money = (usage_of(rec), None) if charged is None else charged
            tokens = usage.input_tokens + usage.output_tokens
            charge = FREE
            if admitted.budget is not None:
                charge = self._actual_charge(admitted, rec, usage, money)
            ticket = admitted.ticket
            if ticket is not None and self._local is not None:
                self._local.settle_now(ticket, tokens)
                ticket = None
            if ticket is None and (
                admitted.budget is None or self._budgets.settle_now(admitted.budget, charge)
            ):
                return
        except Exception as exc:  # a settle that fails leaves a reservation to expire
            log.warning("settling limits/budget failed: %s", type(exc).__name__)
            return
        task = asyncio.get_running_loop().create_task(self._release(admitted, tokens, charge))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _release(self, admitted: Pass, tokens: int, charge: Charge) -> None:
        try:
            if admitted.ticket is not None:
                await self.limiter.settle(admitted.ticket, actual_tokens=tokens)
            if admitted.budget is not None:
                await self._budgets.settle(admitted.budget, charge)
        except Exception as exc:  # a settle that fails leaves a reservation to expire
            log.warning("settling limits/budget failed: %s", type(exc).__name__)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)

    @property
    def budgets(self) -> BudgetGuard:
        return self._budgets
