"""Rate limits: exact bursts, TPM reserve/settle, concurrency slots, eviction — in process and in
a real Redis shared by several OS processes — plus failover while Redis is down or hanging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from gateway import CEILING
from redis.asyncio import BlockingConnectionPool, Redis
from services import RedisServer

from qiao.policies.limits import (
    FailoverLimiter,
    LimiterUnavailable,
    LocalLimiter,
    Quota,
    RateLimited,
    Scope,
    Seen,
    Ticket,
    scopes_for,
)
from qiao.policies.redis_limits import RedisLimiter
from qiao.storage.models import Limits, Team, VirtualKey

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def one(sid: str, **limits: int) -> tuple[Scope, ...]:
    return ((sid, Limits(**limits)),)


def burst(limiter: LocalLimiter, scopes: Sequence[Scope], n: int, tokens: int = 0) -> int:
    admitted = 0
    for _ in range(n):
        with contextlib.suppress(RateLimited):
            limiter.acquire_now(scopes, tokens)
            admitted += 1
    return admitted


# ----------------------------------------------------------------------------- local


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000])
def test_local_admits_exactly_n_of_a_burst(n: int) -> None:
    limiter = LocalLimiter(clock=Clock())
    assert burst(limiter, one("key:a", rpm=n), 3 * n + 5) == n


def test_local_refills_one_request_per_interval() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    scopes = one("key:a", rpm=60)
    assert burst(limiter, scopes, 100) == 60
    with pytest.raises(RateLimited) as refused:
        limiter.acquire_now(scopes, 0)
    assert refused.value.retry_after == 1.0
    clock.advance(0.999)
    assert burst(limiter, scopes, 1) == 0
    clock.advance(0.001)
    assert burst(limiter, scopes, 5) == 1


def test_local_acquire_is_all_or_nothing() -> None:
    limiter = LocalLimiter(clock=Clock())
    roomy, full = ("key:a", Limits(rpm=10)), ("team:t", Limits(rpm=1))
    limiter.acquire_now((full,), 0)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire_now((roomy, full), 0)
    assert refused.value.scope == "team:t" and refused.value.kind == "requests"
    assert burst(limiter, (roomy,), 20) == 10  # the refused request took nothing from key:a


def test_local_tpm_reserves_the_estimate_and_settles_the_difference() -> None:
    limiter = LocalLimiter(clock=Clock())
    scopes = one("key:a", tpm=1000)
    first = limiter.acquire_now(scopes, 600)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire_now(scopes, 600)
    assert refused.value.kind == "tokens"
    assert refused.value.retry_after == 12.0  # 200 tokens at 1000/min
    limiter.settle_now(first, 100)  # used far less than reserved: refund 500
    second = limiter.acquire_now(scopes, 600)
    assert second.quotas() == (None, Quota(1000, 300, 42.0))


def test_local_tpm_overage_is_debt() -> None:
    limiter = LocalLimiter(clock=Clock())
    scopes = one("key:a", tpm=1000)
    limiter.settle_now(limiter.acquire_now(scopes, 100), 1500)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire_now(scopes, 0)
    assert refused.value.retry_after == 30.0  # 1500 - 1000 tokens of debt at 1000/min


def test_local_estimate_above_the_tpm_limit_needs_a_full_bucket() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    scopes = one("key:a", tpm=1000)
    limiter.acquire_now(scopes, 5000)  # admitted into the full bucket
    with pytest.raises(RateLimited):
        limiter.acquire_now(scopes, 5000)
    clock.advance(300)
    limiter.acquire_now(scopes, 5000)


def test_local_concurrency_slot_is_released_once() -> None:
    limiter = LocalLimiter(clock=Clock())
    scopes = one("key:a", concurrency=2)
    first = limiter.acquire_now(scopes, 0)
    limiter.acquire_now(scopes, 0)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire_now(scopes, 0)
    assert refused.value.kind == "concurrency" and refused.value.retry_after == 1.0
    limiter.settle_now(first, 0)
    limiter.settle_now(first, 0)  # idempotent: frees one slot, not two
    limiter.acquire_now(scopes, 0)
    with pytest.raises(RateLimited):
        limiter.acquire_now(scopes, 0)


def test_local_evicts_idle_buckets_only() -> None:
    clock = Clock()
    limiter = LocalLimiter(clock=clock, keep=10)
    for i in range(1000):
        limiter.settle_now(limiter.acquire_now(one(f"key:{i}", rpm=60), 0), 0)  # drains in 1 s
    busy = limiter.acquire_now(one("key:busy", concurrency=1), 0)  # in flight
    limiter.settle_now(limiter.acquire_now(one("key:debt", rpm=1), 0), 0)  # drains in 60 s
    clock.advance(2)
    for _ in range(600):
        limiter.settle_now(limiter.acquire_now(one("key:hot", rpm=10**6), 0), 0)
    assert len(limiter) <= 10
    with pytest.raises(RateLimited):
        limiter.acquire_now(one("key:busy", concurrency=1), 0)
    with pytest.raises(RateLimited):
        limiter.acquire_now(one("key:debt", rpm=1), 0)
    limiter.settle_now(busy, 0)
    limiter.acquire_now(one("key:busy", concurrency=1), 0)


def test_rate_limited_headers_for_requests() -> None:
    limiter = LocalLimiter(clock=Clock())
    scopes = one("key:a", rpm=100)
    assert burst(limiter, scopes, 100) == 100
    with pytest.raises(RateLimited) as refused:
        limiter.acquire_now(scopes, 0)
    err = refused.value
    assert err.status == 429 and err.retry_after == 0.6
    assert err.headers() == {
        "Retry-After": "1",
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
    }
    assert "requests per minute" in err.message and "key:a" not in err.message


def test_rate_limited_headers_for_tokens() -> None:
    limiter = LocalLimiter(clock=Clock())
    scopes = one("key:a", rpm=10, tpm=1000)
    limiter.acquire_now(scopes, 600)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire_now(scopes, 600)
    headers = refused.value.headers()
    assert headers["Retry-After"] == "12"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == "400"
    assert headers["x-ratelimit-reset-tokens"] == "36s"


def test_ticket_headers_report_the_tightest_scope() -> None:
    limiter = LocalLimiter(clock=Clock())
    ticket = limiter.acquire_now((("key:a", Limits(rpm=10)), ("team:t", Limits(rpm=3))), 0)
    assert ticket.headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "20s",
    }


def test_local_rejects_bad_input() -> None:
    limiter, other = LocalLimiter(), LocalLimiter()
    with pytest.raises(ValueError):
        limiter.acquire_now(one("key:a", rpm=1), -1)
    ticket = other.acquire_now(one("key:a", rpm=1), 0)
    with pytest.raises(ValueError):
        limiter.settle_now(ticket, 0)


def test_zero_limits_refuse_everything() -> None:
    limiter = LocalLimiter(clock=Clock())
    for limits in ({"rpm": 0}, {"tpm": 0}, {"concurrency": 0}):
        with pytest.raises(RateLimited):
            limiter.acquire_now(one("key:z", **limits), 0)


def test_scopes_for_key_team_and_matching_model_patterns() -> None:
    key = VirtualKey(
        id="k1",
        name="k",
        key_hash=b"",
        hint="",
        limits=Limits(rpm=10),
        model_limits={"gpt-4o*": Limits(tpm=100), "claude-*": Limits(rpm=1), "o3": Limits()},
    )
    team = Team(id="t1", name="t", limits=Limits(concurrency=5))
    assert scopes_for(key, team, "gpt-4o-mini") == [
        ("key:k1", Limits(rpm=10)),
        ("team:t1", Limits(concurrency=5)),
        ("keymodel:k1:gpt-4o*", Limits(tpm=100)),
    ]
    assert scopes_for(key, None, "o3") == [("key:k1", Limits(rpm=10))]


def test_local_acquire_and_settle_is_fast() -> None:
    limiter = LocalLimiter()
    scopes = (
        ("key:k", Limits(rpm=10**9, tpm=10**12, concurrency=10**6)),
        ("team:t", Limits(rpm=10**9, tpm=10**12)),
        ("keymodel:k:gpt-4o", Limits(rpm=10**9)),
    )

    async def loop(n: int) -> float:
        start = time.process_time()
        for _ in range(n):
            ticket = await limiter.acquire(scopes, tokens=1000)
            await limiter.settle(ticket, actual_tokens=900)
        return (time.process_time() - start) / n

    per_call = min(asyncio.run(loop(5000)) for _ in range(5))
    assert per_call < 50e-6  # ~7 µs measured; the bound leaves room for slow CI machines


# ----------------------------------------------------------------------------- failover (fake)


class FlakyRemote:
    """A remote limiter that can be switched off; keeps its own local state meanwhile."""

    def __init__(self, nodes: int = 1, seen: Sequence[Seen] = ()) -> None:
        self.inner = LocalLimiter()
        self.down = False
        self.nodes = nodes
        self.seen = list(seen)
        self.closed = False

    @property
    def degraded(self) -> bool:
        return False

    def known(self) -> Iterator[Seen]:
        return iter(self.seen)

    async def close(self) -> None:
        self.closed = True

    def _check(self) -> None:
        if self.down:
            raise LimiterUnavailable("down")

    async def ping(self) -> None:
        self._check()

    async def acquire(self, scopes: Sequence[Scope], *, tokens: int) -> Ticket:
        self._check()
        ticket = self.inner.acquire_now(scopes, tokens)
        ticket.issuer = self
        return ticket

    async def settle(self, ticket: Ticket, *, actual_tokens: int) -> None:
        self._check()
        ticket.issuer = self.inner
        self.inner.settle_now(ticket, actual_tokens)


def test_failover_switches_to_local_and_back(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        clock, remote, local = Clock(), FlakyRemote(), LocalLimiter()
        changes: list[bool] = []
        limiter = FailoverLimiter(
            remote, local, probe_interval=5, clock=clock, on_change=changes.append
        )
        scopes = one("key:a", rpm=2)
        held = await limiter.acquire(scopes, tokens=0)
        assert held.issuer is remote
        remote.down = True
        first = await limiter.acquire(scopes, tokens=0)
        await limiter.acquire(scopes, tokens=0)
        assert limiter.degraded and first.issuer is local
        with pytest.raises(RateLimited):  # local limits hold while degraded
            await limiter.acquire(scopes, tokens=0)
        await limiter.settle(held, actual_tokens=0)  # a remote ticket: no error while down
        remote.down = False
        clock.advance(5)
        with contextlib.suppress(RateLimited):
            await limiter.acquire(scopes, tokens=0)  # served locally; starts a probe
        await asyncio.sleep(0)
        assert not limiter.degraded
        assert (await limiter.acquire(one("key:b", rpm=1), tokens=0)).issuer is remote
        assert changes == [True, False] and limiter.failovers == 1
        await limiter.close()

    asyncio.run(main())
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_failover_enforces_this_nodes_share_from_the_last_counts() -> None:
    """3 live nodes, Redis last said 60 of 90 were used: this node may admit 1/3 of the 30
    left, not a fresh 90 of its own."""

    async def main() -> int:
        clock = Clock()
        seen = Seen("key:a", Limits(rpm=90), 60 * 60_000, 0, clock.now)
        remote = FlakyRemote(nodes=3, seen=[seen])
        remote.down = True
        limiter = FailoverLimiter(remote, LocalLimiter(clock=clock), clock=clock)
        admitted = 0
        for _ in range(100):
            with contextlib.suppress(RateLimited):
                await limiter.acquire(one("key:a", rpm=90), tokens=0)
                admitted += 1
        clock.advance(2)  # the share refills at 30 per minute: one more per 2 s
        await limiter.acquire(one("key:a", rpm=90), tokens=0)
        with pytest.raises(RateLimited):
            await limiter.acquire(one("key:a", rpm=90), tokens=0)
        await limiter.close()
        assert remote.closed
        return admitted

    assert asyncio.run(main()) == 10


def test_failover_share_is_at_least_one_and_unlimited_stays_unlimited() -> None:
    async def main() -> None:
        remote = FlakyRemote(nodes=4)
        remote.down = True
        limiter = FailoverLimiter(remote, LocalLimiter())
        scopes = (("key:a", Limits(rpm=2, tpm=None, concurrency=8)),)
        ticket = await limiter.acquire(scopes, tokens=10**9)
        assert ticket.scopes[0][1] == Limits(rpm=1, tpm=None, concurrency=2)
        with pytest.raises(RateLimited):
            await limiter.acquire(scopes, tokens=0)
        await limiter.close()

    asyncio.run(main())


# ----------------------------------------------------------------------------- redis


@contextlib.asynccontextmanager
async def redis_limiter(server: RedisServer, **options: float) -> AsyncIterator[RedisLimiter]:
    # A blocking pool: a burst queues for a connection instead of failing.
    client = Redis(connection_pool=BlockingConnectionPool.from_url(server.url, max_connections=20))
    limiter = RedisLimiter(
        client, prefix=f"test:{uuid.uuid4().hex}:", probe_url=server.url, **options
    )
    try:
        yield limiter
    finally:
        await limiter.close()
        await client.aclose()


def test_redis_admits_exactly_n_of_a_concurrent_burst(redis_server: RedisServer) -> None:
    async def main() -> int:
        async with redis_limiter(redis_server, timeout=5) as limiter:
            scopes = one("key:a", rpm=50)

            async def attempt() -> bool:
                try:
                    await limiter.acquire(scopes, tokens=0)
                except RateLimited:
                    return False
                return True

            return sum(await asyncio.gather(*(attempt() for _ in range(200))))

    assert asyncio.run(main()) == 50


def test_redis_batches_the_acquires_of_one_iteration_into_one_call(
    redis_server: RedisServer,
) -> None:
    async def main() -> int:
        async with redis_limiter(redis_server, timeout=5, heartbeat=60) as limiter:
            scopes = one("key:a", rpm=1000, tpm=10**6, concurrency=1000)
            await limiter.acquire(scopes, tokens=1)  # the script is loaded
            stats = Redis.from_url(redis_server.url)
            before = (await stats.info("commandstats"))["cmdstat_evalsha"]["calls"]
            tickets = await asyncio.gather(*(limiter.acquire(scopes, tokens=1) for _ in range(200)))
            await asyncio.gather(*(limiter.settle(t, actual_tokens=2) for t in tickets))
            after = (await stats.info("commandstats"))["cmdstat_evalsha"]["calls"]
            await stats.aclose()
            return int(after - before)

    assert asyncio.run(main()) == 2  # one for 200 acquires, one for 200 settles


def busy_loop(seconds: float, step: float) -> None:
    """Keep this event loop busy as a burst does: every iteration runs a callback that holds
    the CPU for ``step`` seconds, for ``seconds`` in all."""
    loop = asyncio.get_running_loop()
    end = time.monotonic() + seconds

    def hog() -> None:
        time.sleep(step)
        if time.monotonic() < end:
            loop.call_soon(hog)

    loop.call_soon(hog)


def test_redis_replies_read_late_by_our_own_busy_loop_are_not_an_outage(
    redis_server: RedisServer,
) -> None:
    """A burst on a saturated loop: every iteration holds the CPU longer than ``timeout``, so
    replies are read late although Redis answers at once. None of it may fail over."""

    async def main() -> int:
        async with redis_limiter(redis_server, timeout=0.05) as limiter:
            scopes = one("key:a", rpm=1000)
            await limiter.acquire(scopes, tokens=0)  # connections are open
            busy_loop(3.0, 0.06)
            started = time.monotonic()
            burst = [limiter.acquire(scopes, tokens=0) for _ in range(300)]
            tickets = await asyncio.gather(*burst)
            assert time.monotonic() - started > 0.05  # late indeed: the timeout passed
            return len(tickets)

    assert asyncio.run(main()) == 300


def test_redis_busy_but_alive_is_waited_for(redis_server: RedisServer) -> None:
    """Redis runs a slow script for ~0.3 s: slower than ``timeout``, but it answers the
    health probe within ``probe_timeout``, so the acquire waits instead of failing over."""

    async def main() -> None:
        async with redis_limiter(redis_server, timeout=0.05, probe_timeout=2) as limiter:
            scopes = one("key:a", rpm=10)
            await limiter.acquire(scopes, tokens=0)
            blocker = Redis.from_url(redis_server.url)
            busy = asyncio.create_task(blocker.eval(BUSY, 0, 3_000_000))
            await asyncio.sleep(0.05)
            ticket = await limiter.acquire(scopes, tokens=0)
            assert ticket.requests is not None and ticket.requests.remaining == 8
            await busy
            await blocker.aclose()

    asyncio.run(main())


def test_redis_heartbeat_counts_live_nodes(redis_server: RedisServer) -> None:
    async def main() -> None:
        prefix = f"test:{uuid.uuid4().hex}:"
        clients = [Redis.from_url(redis_server.url) for _ in range(3)]
        nodes = [RedisLimiter(c, prefix=prefix, heartbeat=0.05) for c in clients]
        await wait_until(lambda: all(n.nodes == 3 for n in nodes))
        await nodes[0].close()  # leaves the set at once; the others see it on their next beat
        await wait_until(lambda: all(n.nodes == 2 for n in nodes[1:]))
        for node in nodes[1:]:
            await node.close()
        for client in clients:
            await client.aclose()

    asyncio.run(main())


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):  # a generous ceiling, not a measurement
        while not condition():  # noqa: ASYNC110 - polls state no event announces
            await asyncio.sleep(0.02)


def test_redis_cancelled_acquire_frees_its_slot(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with redis_limiter(redis_server, timeout=5) as limiter:
            scopes = one("key:a", concurrency=1)
            waiting = asyncio.ensure_future(limiter.acquire(scopes, tokens=0))
            await asyncio.sleep(0)  # queued in the batch
            waiting.cancel()  # its client went away before Redis answered
            await wait_until(lambda: not limiter._tasks and not limiter._queue)
            await limiter.acquire(scopes, tokens=0)  # the slot was given back

    asyncio.run(main())


def test_redis_contract_tpm_concurrency_and_all_or_nothing(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with redis_limiter(redis_server, timeout=5) as limiter:
            scopes = one("key:a", tpm=1000, concurrency=2)
            first = await limiter.acquire(scopes, tokens=600)
            assert first.tokens is not None and first.tokens.remaining == 400
            with pytest.raises(RateLimited) as refused:
                await limiter.acquire(scopes, tokens=600)
            assert refused.value.kind == "tokens" and 11 < refused.value.retry_after <= 12
            assert refused.value.headers()["x-ratelimit-limit-tokens"] == "1000"
            await limiter.settle(first, actual_tokens=100)
            await limiter.settle(first, actual_tokens=100)  # idempotent
            second = await limiter.acquire(scopes, tokens=600)
            await limiter.acquire(scopes, tokens=0)
            with pytest.raises(RateLimited) as refused:
                await limiter.acquire(scopes, tokens=0)
            assert refused.value.kind == "concurrency"
            await limiter.settle(second, actual_tokens=600)
            await limiter.acquire(scopes, tokens=0)

            roomy, full = ("key:b", Limits(rpm=10)), ("team:t", Limits(rpm=1))
            await limiter.acquire((full,), tokens=0)
            with pytest.raises(RateLimited) as refused:
                await limiter.acquire((roomy, full), tokens=0)
            assert refused.value.scope == "team:t"
            ticket = await limiter.acquire((roomy,), tokens=0)
            assert ticket.quotas()[0] == Quota(10, 9, 6.0)

    asyncio.run(main())


def test_redis_keys_expire_and_crashed_leases_free_slots(redis_server: RedisServer) -> None:
    async def main() -> None:
        async with redis_limiter(redis_server, timeout=5, lease=0.3) as limiter:
            client = Redis.from_url(redis_server.url)
            prefix = limiter._prefix
            await limiter.acquire(one("key:a", rpm=100, concurrency=1), tokens=0)  # never settled
            assert 0 < await client.pttl(f"{prefix}r:key:a") <= 1600  # 600 ms of debt + 1 s
            assert 0 < await client.pttl(f"{prefix}c:key:a") <= 1300
            with pytest.raises(RateLimited):
                await limiter.acquire(one("key:a", concurrency=1), tokens=0)
            await asyncio.sleep(0.4)
            await limiter.acquire(one("key:a", concurrency=1), tokens=0)
            await client.aclose()

    asyncio.run(main())


BUSY = "local i = 0 while i < tonumber(ARGV[1]) do i = i + 1 end return i"


def test_redis_timed_out_acquire_gives_its_slot_back(redis_server: RedisServer) -> None:
    """Redis busy past the probe's patience too: the acquire fails over while queued, then
    runs after its caller gave up."""

    async def main() -> None:
        async with redis_limiter(redis_server, timeout=0.05, probe_timeout=0.1) as limiter:
            scopes = one("key:a", concurrency=5)
            await limiter.settle(await limiter.acquire(scopes, tokens=0), actual_tokens=0)
            blocker = Redis.from_url(redis_server.url)
            busy = asyncio.create_task(blocker.eval(BUSY, 0, 3_000_000))  # ~0.3 s
            await asyncio.sleep(0.05)
            with pytest.raises(LimiterUnavailable):
                await limiter.acquire(scopes, tokens=0)
            await busy
            await asyncio.sleep(0.3)  # the queued script and the give-back both ran by now
            assert await blocker.zcard(f"{limiter._prefix}c:key:a") == 0
            await blocker.aclose()

    asyncio.run(main())


CHILD = r"""
import asyncio, json, sys
from redis.asyncio import BlockingConnectionPool, Redis
from qiao.policies.limits import RateLimited
from qiao.policies.redis_limits import RedisLimiter
from qiao.storage.models import Limits

async def main(url, n, prefix):
    client = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=32))
    limiter = RedisLimiter(client, prefix=prefix, timeout=10)
    await asyncio.gather(*(client.ping() for _ in range(32)))  # open the pool before the race
    print("ready", flush=True)
    sys.stdin.readline()
    scopes = (("key:target", Limits(rpm=100)),)

    async def attempt():
        try:
            await limiter.acquire(scopes, tokens=0)
        except RateLimited:
            return False
        return True

    results = await asyncio.wait_for(asyncio.gather(*(attempt() for _ in range(n))), 30)
    print(json.dumps({"admitted": sum(results), "refused": n - sum(results)}), flush=True)
    await client.aclose()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
"""


def test_target_three_processes_500_requests_admit_exactly_100(
    redis_server: RedisServer,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_server.url, str(n), prefix],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # killed as a group below, whatever happens
        )
        for n in (167, 167, 166)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert select.select([proc.stdout], [], [], CEILING)[0], "a child never got ready"
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=CEILING) for proc in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    counts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(c["admitted"] for c in counts) == 100
    assert sum(c["refused"] for c in counts) == 400


@pytest.fixture
def restore_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    yield redis_server
    if redis_server.proc is None:
        redis_server.start()


def test_failover_while_redis_is_stopped_and_recovery(restore_redis: RedisServer) -> None:
    server = restore_redis

    async def main() -> None:
        client = Redis.from_url(server.url, socket_connect_timeout=0.2)
        remote = RedisLimiter(
            client, prefix=f"test:{uuid.uuid4().hex}:", timeout=0.2, probe_url=server.url
        )
        changes: list[bool] = []
        limiter = FailoverLimiter(
            remote, LocalLimiter(), probe_interval=0.1, on_change=changes.append
        )
        scopes = one("key:a", rpm=3)
        held = await limiter.acquire(scopes, tokens=0)
        assert held.issuer is remote and not limiter.degraded
        server.stop()
        try:
            started = time.monotonic()
            # Local limits start from what Redis last said: 1 of 3 taken, 2 left.
            local = [await limiter.acquire(scopes, tokens=0) for _ in range(2)]
            assert time.monotonic() - started < 1.0
            assert limiter.degraded and all(t.issuer is not remote for t in local)
            with pytest.raises(RateLimited):
                await limiter.acquire(scopes, tokens=0)  # local limits apply meanwhile
            await limiter.settle(held, actual_tokens=0)
            for ticket in local:
                await limiter.settle(ticket, actual_tokens=0)
        finally:
            server.start()
        deadline = time.monotonic() + 10
        while limiter.degraded:
            assert time.monotonic() < deadline, "did not recover from the Redis outage"
            with contextlib.suppress(RateLimited):
                await limiter.acquire(one("key:other", rpm=1000), tokens=0)
            await asyncio.sleep(0.05)
        assert (await limiter.acquire(scopes, tokens=0)).issuer is remote
        assert changes == [True, False]
        await limiter.close()
        await client.aclose()

    asyncio.run(main())


def test_timeouts_are_honoured_when_redis_hangs() -> None:
    async def main() -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # accept, never answer
            writer.close()

        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Redis(host="127.0.0.1", port=port)
        url = f"redis://127.0.0.1:{port}"
        remote = RedisLimiter(client, timeout=0.05, probe_url=url, probe_timeout=0.2)
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable):
            await remote.acquire(one("key:a", rpm=1), tokens=0)
        with pytest.raises(LimiterUnavailable):
            await remote.ping()
        limiter = FailoverLimiter(remote, LocalLimiter())
        ticket = await limiter.acquire(one("key:a", rpm=1), tokens=0)
        assert limiter.degraded and ticket.issuer is not remote
        assert time.monotonic() - started < 2.0
        await limiter.close()
        await client.aclose()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
