"""Fleet-wide limits over real processes: ``qiao serve --workers 3`` on one Redis, a burst of
500 concurrent requests from a real HTTP client against a key with ``rpm: 100``.

On two cores the burst saturates every worker's event loop, so the Redis replies wait behind
the loop longer than ``redis_timeout``; a limiter that takes that for an outage serves on local
limits and admits far more than 100 (106 and 401 were seen)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from gateway import QiaoProcess
from services import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 3
BURST = 500
RPM = 100
BODY = b'{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[int, str, QiaoProcess]]:
    port, key = free_port(), f"sk-test-{uuid.uuid4().hex}"  # a fresh key: fresh Redis buckets
    config = tmp_path / "qiao.yaml"
    config.write_text(f"""
listen: 127.0.0.1:{port}
providers: {{m: {{type: mock}}}}
models: {{m: [{{provider: m}}]}}
keys: [{{name: burst, key: {key}, limits: {{rpm: {RPM}}}}}]
storage:
  url: "sqlite:///{tmp_path / "q.db"}"
  journal_dir: "{tmp_path / "journal"}"
  redis_url: "{redis_server.url}"
server: {{access_log: false}}
""")
    with QiaoProcess("serve", "--config", str(config), "--workers", str(WORKERS)) as serve:
        serve.wait_ready(count=WORKERS)
        yield port, key, serve  # leaving the block kills the supervisor's whole group


async def burst(port: int, key: str) -> tuple[Counter[int], float]:
    """``BURST`` requests at once over ``BURST`` connections opened beforehand (spread over the
    workers by the kernel), so the burst is over well within the 0.6 s in which ``rpm: 100``
    earns one more request."""
    connector = aiohttp.TCPConnector(limit=BURST, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:

        async def one(method: str, path: str, body: bytes | None = None) -> int:
            async with session.request(method, path, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        async with asyncio.timeout(120):
            opened = await asyncio.gather(*(one("GET", "/healthz") for _ in range(BURST)))
            assert set(opened) == {200}
            calls = (one("POST", "/v1/chat/completions", BODY) for _ in range(BURST))
            started = time.monotonic()
            statuses = Counter(await asyncio.gather(*calls))
            return statuses, time.monotonic() - started


def test_three_workers_admit_exactly_the_limit_of_a_500_request_burst(
    fleet: tuple[int, str, QiaoProcess],
) -> None:
    port, key, serve = fleet
    statuses, took = asyncio.run(burst(port, key))
    log = serve.stderr
    # ``rpm: 100`` earns one request every 0.6 s: a burst over within that (0.16–0.24 s here)
    # must admit exactly 100. Should a loaded machine stretch it, the limiter may rightly
    # admit what the time earned, and not one more (the bug admitted 106 to 401).
    assert statuses[200] + statuses[429] == BURST, (statuses, log[-4000:])
    if took < 60 / RPM:
        assert statuses == {200: RPM, 429: BURST - RPM}, (took, log[-4000:])
    else:
        earned = math.ceil(took / (60 / RPM))
        assert RPM <= statuses[200] <= RPM + earned, (statuses, took, log[-4000:])
    assert "serving on local limits" not in log
