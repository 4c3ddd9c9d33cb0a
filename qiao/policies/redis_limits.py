"""Rate limits shared by every process through Redis: one Lua script checks and reserves all
of a request's scopes atomically, another settles.

The same GCRA debt arithmetic as :mod:`.limits` (read that docstring first), on Redis's own
clock (``TIME``) so the processes' clocks need not agree. Per scope there are two keys:
``{prefix}r:{scope}``, a hash ``r`` / ``k`` / ``t`` (request debt, token debt, last update in
ms) that expires once it has drained, and ``{prefix}c:{scope}``, a sorted set of ticket ids
scored by lease expiry — a crashed process's slots expire with their lease. For Redis Cluster
give a hash-tagged prefix such as ``{qiao}:rl:`` so a request's keys share one slot.

Every call is bounded by ``timeout``; Redis errors and timeouts become
:class:`~.limits.LimiterUnavailable` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .limits import (
    LimiterUnavailable,
    LimitKind,
    Quota,
    RateLimited,
    Scope,
    Ticket,
)

__all__ = ["RedisLimiter"]

T = TypeVar("T")

_LIB = """
local P = 60000
local function drained(debt, limit, el)
  if limit < 0 then return 0 end
  if limit == 0 then return debt end
  local d = debt - el * limit
  if d < 0 then return 0 end
  return d
end
local function quota(debt, limit)
  if limit <= 0 then return 0, P end
  local rem = math.floor((limit * P - debt) / P)
  if rem < 0 then rem = 0 end
  return rem, math.ceil(debt / limit)
end
local function int(x) return string.format('%d', x) end
local function load(key, rpm, tpm, now)
  local h = redis.call('HMGET', key, 'r', 'k', 't')
  if not h[3] then return 0, 0 end
  local el = now - tonumber(h[3])
  if el < 0 then el = 0 end
  return drained(tonumber(h[1]) or 0, rpm, el), drained(tonumber(h[2]) or 0, tpm, el)
end
local function save(key, dr, dk, rpm, tpm, now)
  if dr == 0 and dk == 0 then redis.call('DEL', key) return end
  local ttl = 0
  if rpm > 0 then ttl = math.ceil(dr / rpm) end
  if tpm > 0 then ttl = math.max(ttl, math.ceil(dk / tpm)) end
  if rpm == 0 or tpm == 0 then ttl = P end
  redis.call('HSET', key, 'r', int(dr), 'k', int(dk), 't', int(now))
  redis.call('PEXPIRE', key, int(ttl + 1000))
end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
"""

# KEYS: per scope i: KEYS[2i-1] the debt hash, KEYS[2i] the slot set; last, the ticket's
#       tombstone (set when its caller gave up: then the script must do nothing).
# ARGV: ticket, lease ms, tokens, then per scope rpm, tpm, concurrency (-1: no limit).
# Reply: {1, rpm, left, reset ms, tpm, left, reset ms} for the tightest scopes, or
#        {0, scope index, kind 1|2|3, wait ms, rpm, left, reset, tpm, left, reset}, or
#        {2} for a tombstoned ticket.
_ACQUIRE = (
    _LIB
    + """
local ticket, lease, tokens = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = (#KEYS - 1) / 2
if ticket ~= '' and redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {2} end
local lim, dr, dk = {}, {}, {}
for i = 1, n do
  local b = 3 + 3 * (i - 1)
  local rpm, tpm, cc = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  lim[i] = {rpm, tpm, cc}
  dr[i], dk[i] = 0, 0
  if rpm >= 0 or tpm >= 0 then dr[i], dk[i] = load(KEYS[2 * i - 1], rpm, tpm, now) end
  local kind, wait = 0, 0
  if rpm >= 0 then
    local over = dr[i] + P - rpm * P
    if rpm == 0 then kind, wait = 1, P
    elseif over > 0 then kind, wait = 1, math.ceil(over / rpm) end
  end
  if kind == 0 and tpm >= 0 then
    local over = dk[i] + math.min(tokens, tpm) * P - tpm * P
    if tpm == 0 then kind, wait = 2, P
    elseif over > 0 then kind, wait = 2, math.ceil(over / tpm) end
  end
  if kind == 0 and cc >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[2 * i], '-inf', now)
    if redis.call('ZCARD', KEYS[2 * i]) >= cc then kind, wait = 3, 1000 end
  end
  if kind ~= 0 then
    local rl, rs = quota(dr[i], rpm)
    local kl, ks = quota(dk[i], tpm)
    return {0, i, kind, wait, rpm, rl, rs, tpm, kl, ks}
  end
end
local best = {-1, 0, 0, -1, 0, 0}
for i = 1, n do
  local rpm, tpm, cc = lim[i][1], lim[i][2], lim[i][3]
  if rpm >= 0 or tpm >= 0 then
    if rpm >= 0 then
      dr[i] = dr[i] + P
      local left, reset = quota(dr[i], rpm)
      if best[1] < 0 or left < best[2] then best[1], best[2], best[3] = rpm, left, reset end
    end
    if tpm >= 0 then
      dk[i] = dk[i] + tokens * P
      local left, reset = quota(dk[i], tpm)
      if best[4] < 0 or left < best[5] then best[4], best[5], best[6] = tpm, left, reset end
    end
    save(KEYS[2 * i - 1], dr[i], dk[i], rpm, tpm, now)
  end
  if cc >= 0 then
    redis.call('ZADD', KEYS[2 * i], int(now + lease), ticket)
    redis.call('PEXPIRE', KEYS[2 * i], int(lease + 1000))
  end
end
return {1, best[1], best[2], best[3], best[4], best[5], best[6]}
"""
)

# KEYS as for acquire. ARGV: ticket, token delta, then per scope rpm, tpm, concurrency.
_SETTLE = (
    _LIB
    + """
local ticket, delta = ARGV[1], tonumber(ARGV[2])
for i = 1, #KEYS / 2 do
  local b = 2 + 3 * (i - 1)
  local rpm, tpm, cc = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if tpm >= 0 and delta ~= 0 then
    local dr, dk = load(KEYS[2 * i - 1], rpm, tpm, now)
    dk = dk + delta * P
    if dk < 0 then dk = 0 end
    save(KEYS[2 * i - 1], dr, dk, rpm, tpm, now)
  end
  if cc >= 0 then redis.call('ZREM', KEYS[2 * i], ticket) end
end
return 1
"""
)

_KINDS: tuple[LimitKind, ...] = ("requests", "tokens", "concurrency")
_MAX_CLEANUPS = 64


def _arg(limit: int | None) -> int:
    return -1 if limit is None else max(0, limit)


def _quota(limit: int, left: int, reset_ms: int) -> Quota | None:
    return None if limit < 0 else Quota(limit, left, reset_ms / 1000)


@dataclass(slots=True, eq=False)
class _RedisTicket(Ticket):
    id: str = ""


class RedisLimiter:
    """Fleet-wide limits in Redis. Raises :class:`LimiterUnavailable` when Redis is away;
    wrap it in :class:`~.limits.FailoverLimiter` to keep serving on local limits.

    Give it a client on a ``BlockingConnectionPool``: redis-py's default pool raises
    ``MaxConnectionsError`` past 100 connections, which a burst would take for an outage.
    ``lease``: how long a slot outlives a process that never settles (keep it above the
    longest request)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "qiao:rl:",
        timeout: float = 0.05,
        lease: float = 900.0,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout
        self._lease_ms = int(lease * 1000)
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        self._cleanup: set[asyncio.Task[None]] = set()

    @property
    def degraded(self) -> bool:
        return False

    async def ping(self) -> None:
        await self._call(self._client.ping())

    async def close(self) -> None:
        """Wait for pending give-backs of abandoned acquires (each bounded in time)."""
        await asyncio.gather(*self._cleanup, return_exceptions=True)

    async def acquire(self, scopes: Sequence[Scope], *, tokens: int) -> Ticket:
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be a non-negative int, got {tokens!r}")
        held = tuple(scopes)
        if not held:
            return _RedisTicket(held, tokens, issuer=self)
        ticket_id = os.urandom(9).hex() if any(s[1].concurrency is not None for s in held) else ""
        keys = self._keys(held)
        args: list[str | int] = [ticket_id, self._lease_ms, tokens]
        tombstone = f"{self._prefix}x:{ticket_id}"
        for _, limits in held:
            args += (_arg(limits.rpm), _arg(limits.tpm), _arg(limits.concurrency))
        try:
            call = self._acquire(keys=[*keys, tombstone], args=args)
            reply = [int(x) for x in await self._call(call)]
        except BaseException:
            if ticket_id:  # the script may run yet, or have run: undo it either way
                self._release_later(keys[1::2], tombstone, ticket_id)
            raise
        if reply[0] == 2:
            raise LimiterUnavailable("rate-limit ticket id collision")
        if reply[0] == 1:
            rq, tq = _quota(*reply[1:4]), _quota(*reply[4:7])
            return _RedisTicket(held, tokens, rq, tq, self, id=ticket_id)
        _, index, kind, wait_ms, *quotas = reply
        raise RateLimited(
            held[index - 1][0],
            _KINDS[kind - 1],
            wait_ms / 1000,
            requests=_quota(*quotas[0:3]),
            tokens=_quota(*quotas[3:6]),
        )

    async def settle(self, ticket: Ticket, *, actual_tokens: int) -> None:
        if ticket.settled:
            return
        if not isinstance(ticket, _RedisTicket) or ticket.issuer is not self:
            raise ValueError("ticket was not issued by this limiter")
        if isinstance(actual_tokens, bool) or not isinstance(actual_tokens, int):
            raise ValueError(f"actual_tokens must be an int, got {actual_tokens!r}")
        if actual_tokens < 0:
            raise ValueError("actual_tokens must not be negative")
        ticket.settled = True
        delta = actual_tokens - ticket.estimate
        args: list[int | str] = [ticket.id, delta]
        needed = False
        for _, limits in ticket.scopes:
            args += (_arg(limits.rpm), _arg(limits.tpm), _arg(limits.concurrency))
            if limits.concurrency is not None or (delta != 0 and limits.tpm is not None):
                needed = True
        if needed:
            await self._call(self._settle(keys=self._keys(ticket.scopes), args=args))

    def _release_later(self, slot_keys: list[str], tombstone: str, ticket_id: str) -> None:
        """A timed-out or cancelled acquire may still run in Redis (or have run) and would hold
        its slots for a whole lease: tombstone the ticket so a late script does nothing, and
        free what an early one took. Bounded: while Redis is down, leases do the job."""
        if len(self._cleanup) >= _MAX_CLEANUPS:
            return
        release = self._release(slot_keys, tombstone, ticket_id)
        task = asyncio.get_running_loop().create_task(release)
        self._cleanup.add(task)
        task.add_done_callback(self._cleanup.discard)

    async def _release(self, slot_keys: list[str], tombstone: str, ticket_id: str) -> None:
        for attempt in range(1, 4):  # Redis was slow or away a moment ago: be patient
            try:
                async with asyncio.timeout(attempt * max(1.0, 10 * self._timeout)):
                    pipe = self._client.pipeline(transaction=False)
                    pipe.set(tombstone, 1, px=self._lease_ms)
                    for key in slot_keys:
                        pipe.zrem(key, ticket_id)
                    await pipe.execute()
                    return
            except (RedisError, OSError, TimeoutError):
                await asyncio.sleep(attempt)

    def _keys(self, scopes: Sequence[Scope]) -> list[str]:
        p = self._prefix
        keys: list[str] = []
        for sid, _ in scopes:
            keys += (f"{p}r:{sid}", f"{p}c:{sid}")
        return keys

    async def _call(self, call: Awaitable[T]) -> T:
        """The one place Redis errors and timeouts become :class:`LimiterUnavailable`."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise LimiterUnavailable(
                f"rate-limit store unavailable: {type(exc).__name__}: {exc}"
            ) from exc
