"""Degraded modes with real PostgreSQL and Redis: the database or Redis goes away under load,
callers keep being served (never a 401 for a valid key), nothing is lost, and Qiao recovers on
its own. The PostgreSQL outage lasts 60 s in CI (QIAO_PG_OUTAGE_SECONDS to change it)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
from conftest import ADMIN_KEY
from gateway import Gateway
from services import PostgresServer, RedisServer

OUTAGE = float(os.environ.get("QIAO_PG_OUTAGE_SECONDS") or (60 if os.environ.get("CI") else 8))
BODY = json.dumps(
    {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
).encode()


def post(gw: Gateway, key: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=BODY,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def ready(gw: Gateway) -> dict[str, Any]:
    with urllib.request.urlopen(gw.url + "/readyz", timeout=5) as r:
        return dict(json.loads(r.read()))


def admin(gw: Gateway, path: str, body: Any) -> Any:
    req = urllib.request.Request(
        gw.url + path,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


async def _count_rows(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM usage GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


def test_postgres_outage_under_load(postgres_server: PostgresServer, tmp_path: Path) -> None:
    asyncio.run(_reset(postgres_server.dsn))
    config = f"""
admin_key: {ADMIN_KEY}
providers: {{mock: {{type: mock}}}}
models: {{m: [{{provider: mock}}]}}
storage: {{url: "{postgres_server.dsn}", journal_dir: "{tmp_path / "journal"}", sync_interval: 0.2}}
"""
    statuses: Counter[int] = Counter()
    with Gateway(config) as gw:
        key = admin(gw, "/admin/keys", {"name": "during-outage"})["key"]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                statuses[post(gw, key)] += 1
                time.sleep(0.005)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            time.sleep(1)
            postgres_server.stop("immediate")
            wait(
                lambda: "store" in ready(gw)["degraded"],
                10,
                "readiness never said the store is down",
            )
            assert post(gw, "sk-qiao-unknown-key-000000") == 503  # unknown: maybe the DB knows it
            time.sleep(OUTAGE)
        finally:
            postgres_server.start()
        wait(
            lambda: ready(gw)["status"] == "ready",
            30,
            "did not recover after the database returned",
        )
        time.sleep(1)
        stop.set()
        for w in workers:
            w.join(20)
        served = statuses[200]
        # the journal replays into the database: every served request gets its row
        deadline = time.monotonic() + 60
        while (rows := asyncio.run(_count_rows(postgres_server.dsn))).get("ok", 0) < served:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert statuses[401] == 0, statuses
    assert set(statuses) == {200}, statuses
    assert served > 100
    assert rows.get("ok", 0) == served, (rows, served)
    assert rows.get("pending", 0) == 0


async def _reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('usage') IS NOT NULL")
        if exists:
            await conn.execute("DELETE FROM usage")
    finally:
        await conn.close()


def test_redis_outage_falls_back_to_local_limits(redis_server: RedisServer, tmp_path: Path) -> None:
    config = f"""
admin_key: {ADMIN_KEY}
providers: {{mock: {{type: mock}}}}
models: {{m: [{{provider: mock}}]}}
storage: {{url: "memory://", redis_url: "{redis_server.url}"}}
"""
    with Gateway(config) as gw:
        key = admin(gw, "/admin/keys", {"name": "limited", "limits": {"rpm": 1000}})["key"]
        assert post(gw, key) == 200 and ready(gw)["status"] == "ready"
        redis_server.stop()
        try:
            assert post(gw, key) == 200  # served on local limits
            wait(lambda: "redis" in ready(gw)["degraded"], 5, "readiness never said Redis is down")
            assert all(post(gw, key) == 200 for _ in range(5))
        finally:
            redis_server.start()
        wait(
            lambda: post(gw, key) == 200 and ready(gw)["status"] == "ready",
            15,
            "did not go back to Redis on its own",
        )
        assert post(gw, key) == 200


def test_limits_hold_across_gateways_sharing_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    db = tmp_path / "shared.db"

    def cfg(journal: str) -> str:
        return f"""
admin_key: {ADMIN_KEY}
providers: {{mock: {{type: mock}}}}
models: {{m: [{{provider: mock}}]}}
storage: {{url: "sqlite:///{db}", journal_dir: "{tmp_path / journal}", redis_url: "{redis_server.url}", sync_interval: 0.1}}
"""

    with Gateway(cfg("j1")) as a, Gateway(cfg("j2")) as b:
        key = admin(a, "/admin/keys", {"name": "shared", "limits": {"rpm": 10}})["key"]
        wait(lambda: post(b, key) != 401, 3, "node B never learnt the key")
        results: list[int] = []
        lock = threading.Lock()

        def hit(gw: Gateway) -> None:
            status = post(gw, key)
            with lock:
                results.append(status)

        threads = [threading.Thread(target=hit, args=(a if i % 2 else b,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        # 10 per minute for the whole fleet, one used above; a slow machine may see the bucket
        # refill one request (every 6 s) meanwhile. Per-process limits would admit ~20 here.
        assert 9 <= results.count(200) <= 10, results
        assert results.count(429) == 40 - results.count(200)
