"""Rate limits shared by every process through Redis: one Lua script checks and reserves all
of a request's scopes atomically, or settles a ticket, for every request of a batch.

The same GCRA debt arithmetic as :mod:`.limits` (read that docstring first), on Redis's own
clock (``TIME``) so the processes' clocks need not agree. Per scope there are two keys:
``{prefix}r:{scope}``, a hash ``r`` / ``k`` / ``t`` (request debt, token debt, last update in
ms) that expires once it has drained, and ``{prefix}c:{scope}``, a sorted set of ticket ids
scored by lease expiry — a crashed process's slots expire with their lease. For Redis Cluster
give a hash-tagged prefix such as ``{qiao}:rl:`` so a batch's keys share one slot.

**One round trip per loop iteration.** Acquires and settles are queued; the first one of an
event-loop iteration starts a batch task, whose first step (in the next iteration) sends
everything queued by then in one EVALSHA (at most ``_MAX_BATCH`` operations, ``_MAX_INFLIGHT``
batches in flight; what queues meanwhile goes in the next). The script runs them in order,
so a batch is as exact as one call per request; a burst of hundreds of requests costs a handful
of calls instead of hundreds.

**Slow is not down.** Every call goes through :class:`~.redis_health.RedisHealth`: an error
means Redis is down, but a reply later than ``timeout`` counts only if a health probe that our
busy event loop cannot delay fails too (read that module's docstring).

**Membership and last counts, for failover.** Every ``heartbeat`` seconds each limiter
renews its entry in the sorted set ``{prefix}nodes`` (scored by expiry on Redis's clock, three
beats long) and reads how many are live; the last count outlives an outage. Each admission's
reply carries every scope's debt, and the last one per scope is kept (bounded). With these,
:class:`~.limits.FailoverLimiter` gives each node ``limit ÷ live nodes`` while Redis is down,
starting from the debts Redis last reported.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from .limits import LimiterUnavailable, LimitKind, Quota, RateLimited, Scope, Seen, Ticket
from .redis_health import RedisHealth
from .redis_limit_scripts import BATCH, HEARTBEAT

__all__ = ["RedisLimiter"]


_KINDS: tuple[LimitKind, ...] = ("requests", "tokens", "concurrency")
_MAX_BATCH = 256  # operations per script call: a few ms of Redis time at most
_MAX_INFLIGHT = 8  # batches on the wire at once
_MAX_CLEANUPS = 4  # give-backs of failed batches running at once (each covers a batch)
_KNOWN = 10_000  # scopes whose last Redis debts are kept for a failover


def _arg(limit: int | None) -> int:
    return -1 if limit is None else max(0, limit)


def _quota(limit: int, left: int, reset_ms: int) -> Quota | None:
    return None if limit < 0 else Quota(limit, left, reset_ms / 1000)


@dataclass(slots=True, eq=False)
class _RedisTicket(Ticket):
    id: str = ""


@dataclass(slots=True, eq=False)
class _Op:
    """One queued acquire or settle: its keys and arguments in the batch script's layout."""

    scopes: tuple[Scope, ...]
    ticket: str
    keys: list[str]
    args: list[str | int]
    future: asyncio.Future[list[int]] | None
    tokens: int = 0  # acquire: the reservation to give back if its caller is gone

    @property
    def acquire(self) -> bool:
        return self.args[0] == "a"


class RedisLimiter:
    """Fleet-wide limits in Redis. Raises :class:`LimiterUnavailable` when Redis is down (see
    the module docstring for what counts); wrap it in :class:`~.limits.FailoverLimiter` to
    keep serving on local limits.

    Prefer :meth:`from_url`: it gives the limiter a small pool of its own (nothing else can
    starve it) and a URL for the independent health probe. A client passed in should be on a
    ``BlockingConnectionPool``. ``lease``: how long a slot outlives a process that never
    settles (keep it above the longest request)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "qiao:rl:",
        timeout: float = 0.05,
        lease: float = 900.0,
        probe_url: str | None = None,
        probe_timeout: float = 1.0,
        ceiling: float = 5.0,
        heartbeat: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._owned = False
        self._prefix = prefix
        self._health = RedisHealth(
            client,
            timeout=timeout,
            probe_url=probe_url,
            probe_timeout=probe_timeout,
            ceiling=ceiling,
        )
        self._lease_ms = int(lease * 1000)
        self._clock = clock
        self._script = client.register_script(BATCH)
        self._beat_script = client.register_script(HEARTBEAT)
        self._beat_every = heartbeat
        self._node = os.urandom(8).hex()
        self._nodes = 1
        self._known: dict[str, Seen] = {}
        self._queue: list[_Op] = []
        self._sending = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cleanups = 0
        self._beat: asyncio.Task[None] | None = None
        try:  # the gateway builds its engine inside the loop: join the fleet right away
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self._ensure_heartbeat()

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "qiao:rl:", timeout: float = 0.05, lease: float = 900.0
    ) -> RedisLimiter:
        """A limiter with its own connection pool, closed by :meth:`close`."""
        pool = BlockingConnectionPool.from_url(
            url, max_connections=_MAX_INFLIGHT + _MAX_CLEANUPS + 4, timeout=None
        )
        limiter = cls(
            Redis(connection_pool=pool), prefix=prefix, timeout=timeout, lease=lease, probe_url=url
        )
        limiter._owned = True
        return limiter

    @property
    def degraded(self) -> bool:
        return False

    @property
    def nodes(self) -> int:
        """Live limiters sharing this prefix, as last counted (1 until the first heartbeat)."""
        return self._nodes

    def known(self) -> Iterator[Seen]:
        """The debts Redis last reported per scope (at most ``_KNOWN`` scopes)."""
        return iter(list(self._known.values()))

    async def ping(self) -> None:
        """Raise :class:`LimiterUnavailable` unless Redis answers the health probe."""
        self._ensure_heartbeat()
        await self._health.ping()

    async def close(self) -> None:
        """Leave the fleet, wait for queued work and give-backs (each bounded in time)."""
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            try:
                async with asyncio.timeout(self._health.probe_timeout):
                    await self._client.zrem(f"{self._prefix}nodes", self._node)
            except (RedisError, OSError, TimeoutError):
                pass  # the entry expires by itself
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._health.close()
        if self._owned:
            await self._client.aclose()

    async def acquire(self, scopes: Sequence[Scope], *, tokens: int) -> Ticket:
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"tokens must be a non-negative int, got {tokens!r}")
        held = tuple(scopes)
        if not held:
            return _RedisTicket(held, tokens, issuer=self)
        ticket_id = os.urandom(9).hex() if any(s[1].concurrency is not None for s in held) else ""
        keys = self._keys(held)
        keys.append(f"{self._prefix}x:{ticket_id}")  # the tombstone of a given-up ticket
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        args = self._args("a", held, ticket_id, tokens)
        self._submit(_Op(held, ticket_id, keys, args, future, tokens))
        reply = await future
        if reply[0] == 1:
            rq, tq = _quota(*reply[1:4]), _quota(*reply[4:7])
            return _RedisTicket(held, tokens, rq, tq, self, id=ticket_id)
        if reply[0] == 2:
            raise LimiterUnavailable("rate-limit ticket id collision")
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
        if _settle_needed(ticket.scopes, delta):
            future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            self._submit(self._settle_op(ticket.scopes, ticket.id, delta, future))
            await future

    # ------------------------------------------------------------------ batching

    def _args(self, op: str, scopes: tuple[Scope, ...], ticket: str, n: int) -> list[str | int]:
        args: list[str | int] = [op, len(scopes), ticket, n]
        for _, limits in scopes:
            args += (_arg(limits.rpm), _arg(limits.tpm), _arg(limits.concurrency))
        return args

    def _settle_op(
        self,
        scopes: tuple[Scope, ...],
        ticket: str,
        delta: int,
        future: asyncio.Future[list[int]] | None,
    ) -> _Op:
        return _Op(
            scopes, ticket, self._keys(scopes), self._args("s", scopes, ticket, delta), future
        )

    def _submit(self, op: _Op) -> None:
        self._queue.append(op)
        if not self._sending:
            self._send()

    def _send(self) -> None:
        """Start a batch if there is room. A task's first step runs in the next iteration,
        so the batch carries every operation queued until then."""
        if self._inflight < _MAX_INFLIGHT:
            self._sending = True
            self._inflight += 1
            self._spawn(self._run())

    async def _run(self) -> None:
        self._sending = False
        batch = self._queue[:_MAX_BATCH]
        del self._queue[:_MAX_BATCH]
        if self._queue:
            self._send()  # more than one batch's worth
        self._ensure_heartbeat()
        keys: list[str] = []
        args: list[str | int] = [self._lease_ms]
        for op in batch:
            keys += op.keys
            args += op.args
        try:
            if batch:
                replies = await self._health.guard(lambda: self._script(keys=keys, args=args))
                now = self._clock()
                for op, reply in zip(batch, replies, strict=True):
                    self._resolve(op, reply, now)
        except BaseException as exc:
            self._give_back([op for op in batch if op.acquire and op.ticket])
            why = str(exc) if isinstance(exc, LimiterUnavailable) else "limiter closed"
            for op in batch:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(LimiterUnavailable(why))
            if not isinstance(exc, LimiterUnavailable):
                raise
        finally:
            self._inflight -= 1
            if self._queue and not self._sending:
                self._send()

    def _resolve(self, op: _Op, reply: list[int], now: float) -> None:
        if op.acquire:
            self._remember(op.scopes, reply, now)
        future = op.future
        if future is None:
            return
        if not future.cancelled():
            future.set_result(reply)
        elif op.acquire and reply[0] == 1 and _settle_needed(op.scopes, -op.tokens):
            # Its caller went away while it was queued: free the slot and the tokens now.
            self._submit(self._settle_op(op.scopes, op.ticket, -op.tokens, None))

    def _remember(self, scopes: tuple[Scope, ...], reply: list[int], now: float) -> None:
        """Keep the debts Redis reported, for a failover to start from."""
        known = self._known
        if reply[0] == 1:
            for i, (sid, limits) in enumerate(scopes):
                known[sid] = Seen(sid, limits, reply[7 + 2 * i], reply[8 + 2 * i], now)
        elif reply[0] == 0:
            sid, limits = scopes[reply[1] - 1]
            known[sid] = Seen(sid, limits, reply[10], reply[11], now)
        while len(known) > _KNOWN:
            del known[next(iter(known))]

    def _give_back(self, ops: list[_Op]) -> None:
        """A batch that timed out or failed may still run in Redis (or have run), and would
        hold its slots for a whole lease: tombstone its tickets so a late script does nothing,
        and free what an early one took. Bounded: while Redis is down, leases do the job."""
        if ops and self._cleanups < _MAX_CLEANUPS:
            self._cleanups += 1
            self._spawn(self._release(ops))

    async def _release(self, ops: list[_Op]) -> None:
        try:
            for attempt in range(1, 4):  # Redis was slow or away a moment ago: be patient
                try:
                    async with asyncio.timeout(attempt * max(1.0, self._health.probe_timeout)):
                        pipe = self._client.pipeline(transaction=False)
                        for op in ops:
                            pipe.set(op.keys[-1], 1, px=self._lease_ms)
                            for key in op.keys[1:-1:2]:
                                pipe.zrem(key, op.ticket)
                        await pipe.execute()
                        return
                except (RedisError, OSError, TimeoutError):
                    await asyncio.sleep(attempt)
        finally:
            self._cleanups -= 1

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _keys(self, scopes: Sequence[Scope]) -> list[str]:
        p = self._prefix
        keys: list[str] = []
        for sid, _ in scopes:
            keys += (f"{p}r:{sid}", f"{p}c:{sid}")
        return keys

    def _ensure_heartbeat(self) -> None:
        if self._beat is None or self._beat.done():
            self._beat = asyncio.ensure_future(self._heartbeats())

    async def _heartbeats(self) -> None:
        """Renew this node's entry and count the live ones; a failure keeps the last count
        (whether Redis is down is for the requests' calls to find out)."""
        ttl = int(self._beat_every * 3000)
        key = f"{self._prefix}nodes"
        while True:
            try:
                async with asyncio.timeout(self._health.ceiling):
                    live = await self._beat_script(keys=[key], args=[self._node, ttl])
                self._nodes = max(1, int(live))
            except (RedisError, OSError, TimeoutError):
                pass
            await asyncio.sleep(self._beat_every)


def _settle_needed(scopes: tuple[Scope, ...], delta: int) -> bool:
    """Only a concurrency slot or a token correction needs a call to Redis."""
    return any(
        limits.concurrency is not None or (delta != 0 and limits.tpm is not None)
        for _, limits in scopes
    )
