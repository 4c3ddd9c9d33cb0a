"""Usage accounting: one row per upstream attempt, written before it is forwarded and settled
after — through the :class:`~qiao.storage.writer.UsageWriter`, so a crash, a client that goes
away or a database outage loses no row. Costs are computed in Decimal from the price table."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .canonical import Usage
from .observability.accesslog import RequestRecord
from .pricing import Money, PriceTable
from .storage.models import UsageRecord, UsageStatus
from .storage.writer import UsageWriter

__all__ = ["Accounting", "usage_of"]

log = logging.getLogger("qiao.accounting")
_ZERO = Decimal(0)


def usage_of(rec: RequestRecord) -> Usage:
    u: dict[str, Any] | None = rec.usage
    if not u:
        return Usage()
    return Usage(
        _count(u.get("input_tokens")),
        _count(u.get("output_tokens")),
        _count(u.get("cache_read_tokens")),
        _count(u.get("cache_write_tokens")),
        _count(u.get("reasoning_tokens")),
    )


def _count(value: Any) -> int:
    return value if type(value) is int else int(value or 0)


class Accounting:
    def __init__(self, writer: UsageWriter, prices: PriceTable) -> None:
        self._writer = writer
        self.prices = prices

    def cost(self, model: str | None, usage: Usage) -> Money | None:
        """The cost of ``usage`` (None: the model has no price)."""
        if not model or self.prices.get(model) is None:
            return None
        return self.prices.cost(model, usage)

    def pending(self, rec: RequestRecord, attempt: int) -> str:
        attempt_id = f"{rec.request_id}.{attempt}"
        rec.attempt_started_at = datetime.now(UTC)
        self._writer.record(
            UsageRecord(
                attempt_id=attempt_id,
                request_id=rec.request_id,
                key_id=rec.key_id,
                team_id=rec.team_id,
                model=rec.model or "",
                provider=rec.provider,
                status="pending",
                started_at=rec.attempt_started_at,
            )
        )
        return attempt_id

    def settle(
        self, rec: RequestRecord, attempt_id: str, status: UsageStatus, http_status: int | None
    ) -> None:
        usage = usage_of(rec)
        money = self.cost(rec.upstream_model or rec.model, usage)
        rec.charged = (usage, money)  # the gate settles budgets with the same figures
        self._writer.record(
            UsageRecord(
                attempt_id=attempt_id,
                request_id=rec.request_id,
                key_id=rec.key_id,
                team_id=rec.team_id,
                model=rec.model or "",
                provider=rec.provider,
                status=status,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost=_ZERO if money is None else money.amount,
                currency="USD" if money is None else money.currency,
                started_at=rec.attempt_started_at,
                finished_at=datetime.now(UTC),
                http_status=http_status,
            )
        )
