"""Rate limits: requests per minute, tokens per minute and requests in flight, per scope.

A scope is a string id with its :class:`Limits`: ``key:ID``, ``team:ID``, ``keymodel:ID:PATTERN``.
A request acquires all its scopes at once — all or nothing — reserving one request, its token
estimate and one concurrency slot; it settles later with the real token count, which corrects
the reservation and frees the slot.

The algorithm is GCRA (a leaky bucket kept as one number per limit) rather than a sliding-window
counter, because it is exact: a burst of N against N per minute admits exactly N, then one more
every 60/N seconds; the retry-after is exact too; and a scope whose bucket has drained equals a
fresh one, so idle scopes are evicted without losing anything. The bucket is a *debt* in
request·ms (token·ms for TPM): a request adds 60 000 per unit, the debt drains by ``limit`` per
ms, and a request is admitted iff ``debt + cost·60 000 <= limit·60 000``. All integers, so no
float rounding can admit the (N+1)-th or refuse the N-th. A token estimate larger than the
whole TPM limit is admitted only into a full bucket (and leaves it in debt) instead of never.

:class:`LocalLimiter` holds the buckets in this process; :class:`~.redis_limits.RedisLimiter`
holds them in Redis for the fleet; :class:`FailoverLimiter` uses Redis and falls back to local
limits while Redis is down. Down means refused, reset or not answering a health probe — not a
reply that is late because our own event loop was busy (see :mod:`.redis_health`). While failed
over, each node enforces its share of every limit, ``limit // live nodes`` (at least 1; the
count comes from the fleet's heartbeat and the last one is kept), starting from the debts Redis
last reported, so N nodes together still admit about the limit, not N times it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal, NamedTuple, NoReturn, Protocol, TypeAlias

from ..errors import ClientError, Unavailable
from ..storage.models import Limits, Team, VirtualKey

__all__ = [
    "PERIOD_MS",
    "FailoverLimiter",
    "LimitKind",
    "Limiter",
    "LimiterUnavailable",
    "LocalLimiter",
    "Quota",
    "RateLimited",
    "RemoteLimiter",
    "Scope",
    "Seen",
    "Ticket",
    "quota",
    "scopes_for",
]

log = logging.getLogger("qiao.limits")

PERIOD_MS = 60_000
LimitKind = Literal["requests", "tokens", "concurrency"]
Scope: TypeAlias = tuple[str, Limits]


class Quota(NamedTuple):
    """The state of one per-minute limit: what is left and when it is whole again."""

    limit: int
    remaining: int
    reset: float  # seconds until the bucket is full again


def quota(debt: int, limit: int) -> Quota:
    if limit <= 0:
        return Quota(max(limit, 0), 0, PERIOD_MS / 1000)
    remaining = max(0, (limit * PERIOD_MS - debt) // PERIOD_MS)
    return Quota(limit, remaining, -(-debt // limit) / 1000)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``250ms``, ``12s``, ``1.5s``, ``6m0s``."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _quota_headers(requests: Quota | None, tokens: Quota | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, q in (("requests", requests), ("tokens", tokens)):
        if q is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(q.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(q.remaining)
            headers[f"x-ratelimit-reset-{name}"] = _duration(q.reset)
    return headers


_WHAT = {
    "requests": "requests per minute",
    "tokens": "tokens per minute",
    "concurrency": "concurrent requests",
}


class RateLimited(ClientError):
    """A limit refused the request: 429 with ``Retry-After`` and ``x-ratelimit-*`` headers.
    ``requests`` / ``tokens`` describe the scope that tripped (None: it has no such limit)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retry_after: float

    def __init__(
        self,
        scope: str,
        kind: LimitKind,
        retry_after: float,
        *,
        requests: Quota | None = None,
        tokens: Quota | None = None,
    ) -> None:
        owner = scope.split(":", 1)[0]
        wait = max(1, math.ceil(retry_after))
        super().__init__(
            f"Rate limit exceeded: {_WHAT[kind]} for this {owner}. Retry after {wait}s.",
            retry_after=retry_after,
        )
        self.scope = scope
        self.kind = kind
        self.requests = requests
        self.tokens = tokens

    def headers(self) -> dict[str, str]:
        headers = {"Retry-After": str(max(1, math.ceil(self.retry_after)))}
        headers.update(_quota_headers(self.requests, self.tokens))
        return headers


class LimiterUnavailable(Unavailable):
    """The shared limit store (Redis) did not answer in time or refused the connection."""

    code = "limiter_unavailable"


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted request: what it holds in its scopes until it is settled.
    ``requests`` / ``tokens``: the tightest per-minute limits left after admission."""

    scopes: tuple[Scope, ...]
    estimate: int
    requests: Quota | None = None
    tokens: Quota | None = None
    issuer: object = field(default=None, repr=False)
    settled: bool = False

    def quotas(self) -> tuple[Quota | None, Quota | None]:
        """(requests, tokens): the tightest per-minute limits left after admission."""
        return self.requests, self.tokens

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` for a successful response."""
        return _quota_headers(*self.quotas())


class Limiter(Protocol):
    @property
    def degraded(self) -> bool:
        """True while serving on a fallback instead of the configured store."""

    async def acquire(self, scopes: Sequence[Scope], *, tokens: int) -> Ticket:
        """Check and reserve one request, ``tokens`` and one slot in every scope, atomically;
        raise :class:`RateLimited` (nothing reserved) if any scope refuses."""

    async def settle(self, ticket: Ticket, *, actual_tokens: int) -> None:
        """Correct TPM by ``actual_tokens - estimate`` and free the slots; idempotent."""


class Seen(NamedTuple):
    """A scope's debts (request·ms, token·ms) as the shared store reported them at ``at``
    (``time.monotonic`` seconds, or the clock the limiters were given)."""

    scope: str
    limits: Limits
    requests: int
    tokens: int
    at: float


class RemoteLimiter(Limiter, Protocol):
    @property
    def nodes(self) -> int:
        """Live processes sharing the store, as last counted (at least 1)."""

    def known(self) -> Iterable[Seen]:
        """The last debts the store reported, per scope."""

    async def ping(self) -> None:
        """Raise :class:`LimiterUnavailable` unless the store answers."""

    async def close(self) -> None:
        """Stop background work and release connections."""


def scopes_for(key: VirtualKey, team: Team | None, model: str) -> list[Scope]:
    """The scopes one request is limited by: its key, its team, and each ``model_limits``
    pattern of the key that matches ``model`` (a pattern is one shared bucket for all the
    models it matches). Scopes without any limit are left out."""
    scopes: list[Scope] = []
    if _limited(key.limits):
        scopes.append((f"key:{key.id}", key.limits))
    if team is not None and _limited(team.limits):
        scopes.append((f"team:{team.id}", team.limits))
    for pattern, limits in key.model_limits.items():
        if _limited(limits) and (pattern == model or fnmatchcase(model, pattern)):
            scopes.append((f"keymodel:{key.id}:{pattern}", limits))
    return scopes


def _limited(limits: Limits) -> bool:
    return limits.rpm is not None or limits.tpm is not None or limits.concurrency is not None


def _check_tokens(tokens: int, what: str) -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"{what} must be a non-negative int, got {tokens!r}")


class _Bucket:
    """One scope in this process: debts in request·ms / token·ms as of ``t`` (ms)."""

    __slots__ = ("dk", "dr", "inflight", "limits", "t")

    def __init__(self, now: int, limits: Limits) -> None:
        self.dr = 0
        self.dk = 0
        self.t = now
        self.inflight = 0
        self.limits = limits  # the latest seen, to judge idleness at eviction

    def drain(self, limits: Limits, now: int) -> None:
        elapsed = now - self.t
        if elapsed > 0:
            self.t = now
            if self.dr:
                self.dr = _drained(self.dr, limits.rpm, elapsed)
            if self.dk:
                self.dk = _drained(self.dk, limits.tpm, elapsed)

    def idle(self, now: int) -> bool:
        """Drained and holding no slot: the same as a fresh bucket, so safe to forget."""
        if self.inflight:
            return False
        self.drain(self.limits, now)
        return not self.dr and not self.dk


def _drained(debt: int, limit: int | None, elapsed: int) -> int:
    if limit is None:
        return 0  # the limit was lifted
    if limit <= 0:
        return debt
    return max(0, debt - elapsed * limit)


@dataclass(slots=True, eq=False)
class _LocalTicket(Ticket):
    buckets: tuple[_Bucket, ...] = ()
    rq: tuple[int, int] | None = None  # (debt, limit) of the tightest requests bucket
    tq: tuple[int, int] | None = None  # and tokens bucket: turned into quotas when asked

    def quotas(self) -> tuple[Quota | None, Quota | None]:
        rq, tq = self.rq, self.tq
        return (None if rq is None else quota(*rq)), (None if tq is None else quota(*tq))


class LocalLimiter:
    """Exact limits for this process alone. Memory is bounded: buckets that are drained and
    hold no slot are evicted a few at a time, least recently used first."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, keep: int = 1024) -> None:
        self._clock = clock
        self._keep = keep  # evict only above this many buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def degraded(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self._buckets)

    async def acquire(self, scopes: Sequence[Scope], *, tokens: int) -> Ticket:
        return self.acquire_now(scopes, tokens)

    def acquire_now(self, scopes: Sequence[Scope], tokens: int) -> Ticket:
        """:meth:`acquire` without the coroutine (it never waits)."""
        if type(tokens) is not int or tokens < 0:
            _check_tokens(tokens, "tokens")
        now = int(self._clock() * 1000)
        buckets = self._buckets
        held: list[_Bucket] = []
        for sid, limits in scopes:
            b = buckets.get(sid)
            if b is None:
                b = buckets[sid] = _Bucket(now, limits)
            else:
                buckets.move_to_end(sid)
                b.drain(limits, now)
                b.limits = limits
            _admit(sid, limits, b, tokens)
            held.append(b)
        # Commit; remember the tightest requests and tokens buckets for the headers.
        rq = tq = None
        rq_left = tq_left = 0
        for (_, limits), b in zip(scopes, held, strict=True):
            b.inflight += 1
            r, k = limits.rpm, limits.tpm
            if r is not None:
                b.dr += PERIOD_MS
                left = r * PERIOD_MS - b.dr
                if rq is None or left < rq_left:
                    rq, rq_left = (b.dr, r), left
            if k is not None:
                b.dk += tokens * PERIOD_MS
                left = k * PERIOD_MS - b.dk
                if tq is None or left < tq_left:
                    tq, tq_left = (b.dk, k), left
        if len(buckets) > self._keep:
            self._evict(now, len(held) + 1)
        return _LocalTicket(tuple(scopes), tokens, None, None, self, False, tuple(held), rq, tq)

    async def settle(self, ticket: Ticket, *, actual_tokens: int) -> None:
        self.settle_now(ticket, actual_tokens)

    def settle_now(self, ticket: Ticket, actual_tokens: int) -> None:
        if ticket.settled:
            return
        if not isinstance(ticket, _LocalTicket) or ticket.issuer is not self:
            raise ValueError("ticket was not issued by this limiter")
        _check_tokens(actual_tokens, "actual_tokens")
        ticket.settled = True
        delta = (actual_tokens - ticket.estimate) * PERIOD_MS
        now = int(self._clock() * 1000)
        for (_, limits), b in zip(ticket.scopes, ticket.buckets, strict=True):
            b.inflight -= 1
            if delta and limits.tpm is not None:
                b.drain(limits, now)
                b.dk = max(0, b.dk + delta)

    def seed(self, seen: Seen, limits: Limits, divisor: int = 1) -> None:
        """Start ``seen.scope`` from debts another store reported (``1 / divisor`` of them,
        under ``limits``, already divided too), drained since ``seen.at``: a failover begins
        where the fleet was, not from a full bucket. A local debt that is higher is kept."""
        now = int(self._clock() * 1000)
        reported = _Bucket(min(now, int(seen.at * 1000)), limits)
        reported.dr, reported.dk = seen.requests // divisor, seen.tokens // divisor
        reported.drain(limits, now)
        b = self._buckets.get(seen.scope)
        if b is None:
            self._buckets[seen.scope] = reported
            return
        b.drain(limits, now)
        b.dr, b.dk = max(b.dr, reported.dr), max(b.dk, reported.dk)
        b.limits = limits

    def _evict(self, now: int, budget: int) -> None:
        buckets = self._buckets
        for _ in range(budget):
            sid, b = next(iter(buckets.items()))  # the least recently used
            if b.idle(now):
                del buckets[sid]
            else:
                buckets.move_to_end(sid)  # busy: look again later


def _admit(sid: str, limits: Limits, b: _Bucket, tokens: int) -> None:
    r, k, c = limits.rpm, limits.tpm, limits.concurrency
    if r is not None:
        over = b.dr + PERIOD_MS - r * PERIOD_MS
        if r <= 0 or over > 0:
            _refuse(sid, "requests", -(-over // r) if r > 0 else PERIOD_MS, limits, b)
    if k is not None:
        over = b.dk + min(tokens, k) * PERIOD_MS - k * PERIOD_MS
        if k <= 0 or over > 0:
            _refuse(sid, "tokens", -(-over // k) if k > 0 else PERIOD_MS, limits, b)
    if c is not None and b.inflight >= c:
        _refuse(sid, "concurrency", 1000, limits, b)


def _refuse(sid: str, kind: LimitKind, wait_ms: int, limits: Limits, b: _Bucket) -> NoReturn:
    raise RateLimited(
        sid,
        kind,
        wait_ms / 1000,
        requests=None if limits.rpm is None else quota(b.dr, limits.rpm),
        tokens=None if limits.tpm is None else quota(b.dk, limits.tpm),
    )


class FailoverLimiter:
    """Limits in the shared store; while it is down, this node's share of them in this process.

    On :class:`LimiterUnavailable` (which the store raises only when it is down, not merely
    slow) it switches to ``local`` (``degraded`` becomes True, one warning): every limit is
    divided by the live nodes the store last counted (at least 1 each), and the local buckets
    start from the debts the store last reported, divided the same way. It probes the store in
    the background every ``probe_interval`` seconds and switches back by itself. Tickets
    settle where they were issued; a store ticket that cannot be settled frees its slot when
    its lease expires. ``on_change(degraded)`` feeds readiness and metrics.
    """

    def __init__(
        self,
        remote: RemoteLimiter,
        local: LocalLimiter,
        *,
        probe_interval: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._remote = remote
        self._local = local
        self._interval = probe_interval
        self._clock = clock
        self._on_change = on_change
        self._degraded = False
        self._next_probe = 0.0
        self._probe: asyncio.Task[None] | None = None
        self._nodes = 1  # while degraded: the divisor of every limit
        self._shares: dict[Limits, Limits] = {}
        self.failovers = 0

    @property
    def degraded(self) -> bool:
        return self._degraded

    async def acquire(self, scopes: Sequence[Scope], *, tokens: int) -> Ticket:
        if self._degraded:
            self._maybe_probe()
        else:
            try:
                return await self._remote.acquire(scopes, tokens=tokens)
            except LimiterUnavailable as exc:
                self._trip(exc)
        if self._nodes > 1:
            scopes = [(sid, self._share(limits)) for sid, limits in scopes]
        return self._local.acquire_now(scopes, tokens)

    async def settle(self, ticket: Ticket, *, actual_tokens: int) -> None:
        if ticket.issuer is not self._remote:
            await self._local.settle(ticket, actual_tokens=actual_tokens)
        elif self._degraded:
            ticket.settled = True  # the store is away; the lease frees the slot
        else:
            try:
                await self._remote.settle(ticket, actual_tokens=actual_tokens)
            except LimiterUnavailable as exc:
                self._trip(exc)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._remote.close()

    def _share(self, limits: Limits) -> Limits:
        """This node's part of ``limits`` while degraded (remembered per distinct limits)."""
        share = self._shares.get(limits)
        if share is None:
            n = self._nodes
            share = self._shares[limits] = Limits(
                rpm=_part(limits.rpm, n),
                tpm=_part(limits.tpm, n),
                concurrency=_part(limits.concurrency, n),
            )
        return share

    def _trip(self, exc: LimiterUnavailable) -> None:
        if self._degraded:
            return
        self._degraded = True
        self.failovers += 1
        self._nodes = max(1, self._remote.nodes)
        self._shares.clear()
        for seen in self._remote.known():
            self._local.seed(seen, self._share(seen.limits), self._nodes)
        self._next_probe = self._clock() + self._interval
        log.warning(
            "rate-limit store unavailable (%s): serving on local limits (this node's share: "
            "1/%d of each limit)",
            exc,
            self._nodes,
        )
        if self._on_change is not None:
            self._on_change(True)

    def _maybe_probe(self) -> None:
        if self._clock() < self._next_probe or (self._probe and not self._probe.done()):
            return
        self._next_probe = self._clock() + self._interval
        self._probe = asyncio.get_running_loop().create_task(self._run_probe())

    async def _run_probe(self) -> None:
        try:
            await self._remote.ping()
        except LimiterUnavailable:
            return
        if self._degraded:
            self._degraded = False
            log.warning("rate-limit store is back: serving on shared limits")
            if self._on_change is not None:
                self._on_change(False)


def _part(limit: int | None, nodes: int) -> int | None:
    """One node's part of a limit: rounded down so the nodes together stay within it, but at
    least 1, so a limit below the node count still lets requests through."""
    if limit is None or limit <= 0:
        return limit
    return max(1, limit // nodes)
