"""Budget spend counters in Redis, shared by every process (a :class:`~.budget.SpendLedger`).

Amounts are kept as integers with ``INCRBY`` — never ``INCRBYFLOAT``, a binary float — in
nano-units (10⁻⁹ of a dollar, yuan or token: the SQL store's 9 places, so $0.15 per 1M tokens
times one token is exact). Anything finer rounds up, towards more spend. Redis counts in int64
(9.2 × 10⁹ whole units); the script's comparison is exact up to 2⁵³ nano-units (9 × 10⁶ whole
units) and off by a few nano-units beyond. The check and the increment run in one Lua script,
so concurrent reservations cannot overdraw.

Keys: ``{prefix}{scope}:{period start}``; a periodic key expires ``keep`` after its last
write, a ``total`` one (the prepaid quota) never does — so run Redis with persistence, or keep
prepaid quotas in the SQL store. Errors and timeouts raise
:class:`~qiao.storage.base.StorageUnavailable`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import TypeVar

from redis.asyncio import Redis

from ..pricing import to_decimal
from ..storage.base import StorageUnavailable
from .budget import EPOCH
from .redis_health import RedisHealth

__all__ = ["RedisSpendLedger"]

T = TypeVar("T")
_SCALE = 9  # nano-units, like the SQL store

# KEYS[1] spend; ARGV: amount, limit (-1: none), time to live in ms (0: for ever). Reply 1 | 0.
_RESERVE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[2])
if limit >= 0 and cur + tonumber(ARGV[1]) > limit then return 0 end
redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

# KEYS[1] spend; ARGV: amount, limit, time to live in ms (0: for ever). Reserves the amount, or
# what remains below the limit if less; replies with what it reserved, or -1 (nothing remains).
# A clamped amount is formatted with %d: Redis sends a Lua number as %.17g ("9e+18" past 10^17).
_RESERVE_UPTO = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[2])
if cur >= limit then return -1 end
local take = ARGV[1]
if cur + tonumber(take) > limit then take = string.format('%d', limit - cur) end
redis.call('INCRBY', KEYS[1], take)
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return tonumber(take)
"""

# KEYS[1] spend; ARGV: delta, time to live in ms (0: for ever).
_ADJUST = """
redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def _units(amount: Decimal) -> int:
    """Nano-units, rounded up (towards more spend)."""
    if not amount.is_finite():
        raise ValueError(f"amount must be finite, got {amount}")
    return int(amount.scaleb(_SCALE).to_integral_value(rounding=ROUND_CEILING))


class RedisSpendLedger:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "qiao:spend:",
        timeout: float = 0.05,
        keep: timedelta = timedelta(days=62),
        probe_url: str | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._keep = keep
        # A late reply under a busy loop is not an outage (see redis_health): the ledger uses
        # the limiter's rule, so a burst does not turn hard budgets into 503s.
        self._health = RedisHealth(
            client,
            timeout=timeout,
            probe_url=probe_url,
            error=StorageUnavailable,
            what="budget store unavailable",
        )
        self._reserve = client.register_script(_RESERVE)
        self._reserve_upto = client.register_script(_RESERVE_UPTO)
        self._adjust = client.register_script(_ADJUST)

    async def reserve_spend(
        self, scope: str, period_start: datetime, amount: Decimal, limit: Decimal | None
    ) -> bool:
        units = _units(to_decimal(amount))
        cap = -1 if limit is None else int(to_decimal(limit, "limit").scaleb(_SCALE))
        args = (units, cap, self._ttl(period_start))
        reply = await self._call(self._reserve(keys=[self._key(scope, period_start)], args=args))
        return int(reply) == 1

    async def reserve_spend_upto(
        self, scope: str, period_start: datetime, amount: Decimal, limit: Decimal
    ) -> Decimal | None:
        """Reserve ``amount``, or what remains below ``limit`` if less, in one round trip;
        what was reserved, or None when nothing remains."""
        units = _units(to_decimal(amount))
        cap = int(to_decimal(limit, "limit").scaleb(_SCALE))
        args = (units, cap, self._ttl(period_start))
        key = self._key(scope, period_start)
        taken = int(await self._call(self._reserve_upto(keys=[key], args=args)))
        if taken < 0:
            return None
        return amount if taken == units else Decimal(taken).scaleb(-_SCALE)

    async def adjust_spend(self, scope: str, period_start: datetime, delta: Decimal) -> None:
        units = _units(delta)
        if units:
            args = (units, self._ttl(period_start))
            await self._call(self._adjust(keys=[self._key(scope, period_start)], args=args))

    async def get_spend(self, scope: str, period_start: datetime) -> Decimal:
        raw = await self._call(self._client.get(self._key(scope, period_start)))
        return Decimal(int(raw or 0)).scaleb(-_SCALE)

    def _key(self, scope: str, period_start: datetime) -> str:
        return f"{self._prefix}{scope}:{period_start.date().isoformat()}"

    def _ttl(self, period_start: datetime) -> int:
        return 0 if period_start == EPOCH else int(self._keep.total_seconds() * 1000)

    async def _call(self, call: Awaitable[T]) -> T:
        """The one place Redis errors become :class:`StorageUnavailable` (by the rule of
        :class:`~.redis_health.RedisHealth`: down, not merely late)."""
        return await self._health.guard(lambda: call)

    def close(self) -> None:
        self._health.close()
