"""`kill -9` of a gateway with streams in flight, then a restart: every attempt the upstream
accepted has exactly one usage row, the interrupted ones marked so — also when the dead
gateway was a `--workers` supervisor and its workers and the restart is one process — with the
output tokens the stream had relayed, not 0."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import aiohttp
from conftest import CLIENT_KEY
from fakes.openai_upstream import FakeOpenAI, Fault
from gateway import CEILING, QiaoProcess, eventually
from services import free_port

STREAMS = 200


async def _open_streams(
    port: int, n: int, model: str = "slow"
) -> tuple[list[aiohttp.ClientResponse], aiohttp.ClientSession]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "a b c d e f g h"}],
    }

    async def one() -> aiohttp.ClientResponse:
        resp = await session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )
        await resp.content.readline()  # the first event arrived: the stream is live
        return resp

    try:
        responses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), CEILING)
    except BaseException:
        await session.close()
        raise
    return list(responses), session


def _rows(db: Path) -> list[tuple[str, str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT attempt_id, request_id, status, output_tokens FROM usage"
        ).fetchall()


def test_kill_9_with_streams_in_flight_loses_no_usage(tmp_path: Path) -> None:
    with FakeOpenAI(api_key="sk-crash-upstream-0000") as fake:
        fake.set_fault("slow", Fault("slow_stream", delay=2.0))
        port = free_port()
        db = tmp_path / "crash.db"
        cfg = tmp_path / "q.yaml"
        cfg.write_text(f"""
listen: 127.0.0.1:{port}
providers:
  up: {{type: openai, base_url: "{fake.base_url}", api_key: sk-crash-upstream-0000, max_connections: 512}}
models: {{slow: [{{provider: up}}]}}
keys: [{{name: k, key: {CLIENT_KEY}}}]
server: {{access_log: false}}
storage: {{url: "sqlite:///{db}", journal_dir: "{tmp_path / "journal"}"}}
""")
        loop = asyncio.new_event_loop()
        try:
            with QiaoProcess("serve", "--config", str(cfg)) as gw:
                gw.wait_ready()
                responses, session = loop.run_until_complete(_open_streams(port, STREAMS))
                try:
                    assert fake.wait_until(lambda: fake.active >= STREAMS, timeout=CEILING)
                    accepted = len(fake.requests_for("/v1/chat/completions"))
                    assert accepted == STREAMS
                    gw.kill()
                finally:
                    for r in responses:
                        r.close()
                    loop.run_until_complete(session.close())
        finally:
            loop.close()
        fake.clear_faults()
        with QiaoProcess("serve", "--config", str(cfg)) as restarted:
            restarted.wait_ready()  # replays the journal of the killed process
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait() == 0
    rows = _rows(db)
    assert len(rows) == accepted  # one row per accepted attempt: none lost, none doubled
    assert len({r[0] for r in rows}) == accepted and len({r[1] for r in rows}) == accepted
    assert {r[2] for r in rows} == {"interrupted"}


def test_one_process_recovers_what_a_killed_supervisor_and_its_workers_left(
    tmp_path: Path,
) -> None:
    n = 20
    port = free_port()
    db = tmp_path / "crash.db"
    journal = tmp_path / "journal"
    words = " ".join(f"w{i}" for i in range(400))
    cfg = tmp_path / "q.yaml"
    cfg.write_text(f"""
listen: 127.0.0.1:{port}
providers:
  slow: {{type: mock, mock: {{tokens_per_second: 4, reply: "{words}"}}}}
models: {{slow: [{{provider: slow}}]}}
keys: [{{name: k, key: {CLIENT_KEY}}}]
server: {{access_log: false}}
storage: {{url: "sqlite:///{db}", journal_dir: "{journal}"}}
""")

    def relaying(status: str) -> bool:
        rows = _rows(db)
        return len(rows) == n and all(r[2] == status and r[3] > 0 for r in rows)

    loop = asyncio.new_event_loop()
    try:
        with QiaoProcess("serve", "--config", str(cfg), "--workers", "3") as gw:
            gw.wait_ready(count=3)
            responses, session = loop.run_until_complete(_open_streams(port, n))
            try:
                # Every stream has relayed some tokens and said so (a progress row).
                eventually(lambda: relaying("pending"), "20 streams recorded their progress")
                gw.kill()  # kill -9 of the supervisor and all three workers
            finally:
                for r in responses:
                    r.close()
                loop.run_until_complete(session.close())
    finally:
        loop.close()
    left = [d.name for d in journal.iterdir() if d.is_dir() and any(d.glob("usage-*.jsonl"))]
    assert len(left) >= 2, left  # the streams were spread over the workers' journals
    with QiaoProcess("serve", "--config", str(cfg)) as restarted:  # one process, no --workers
        restarted.wait_ready()
        eventually(lambda: relaying("interrupted"), "every attempt marked interrupted")
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait() == 0
    assert not list(journal.rglob("usage-*.jsonl"))  # every journal replayed, none left
