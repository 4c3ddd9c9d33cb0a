"""`kill -9` of a gateway with 200 streams in flight, then a restart: every attempt the upstream
accepted has exactly one usage row, the interrupted ones marked so."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
from conftest import CLIENT_KEY
from fakes.openai_upstream import FakeOpenAI, Fault
from services import free_port

STREAMS = 200


def _start(cfg: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIAO_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiao", "serve", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen = ""
    while " ready on " not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    return proc


async def _open_streams(
    port: int, n: int
) -> tuple[list[aiohttp.ClientResponse], aiohttp.ClientSession]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    body = {
        "model": "slow",
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

    responses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 60)
    return list(responses), session


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
        proc = _start(cfg)
        loop = asyncio.new_event_loop()
        try:
            responses, session = loop.run_until_complete(_open_streams(port, STREAMS))
            assert fake.wait_until(lambda: fake.active >= STREAMS, timeout=30)
            accepted = len(fake.requests_for("/v1/chat/completions"))
            assert accepted == STREAMS
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            for r in responses:
                r.close()
            loop.run_until_complete(session.close())
        finally:
            loop.close()
            proc.kill()
        fake.clear_faults()
        restarted = _start(cfg)  # replays the journal of the killed process
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(30) == 0
    rows = (
        sqlite3.connect(db).execute("SELECT attempt_id, request_id, status FROM usage").fetchall()
    )
    assert len(rows) == accepted  # one row per accepted attempt: none lost, none doubled
    assert len({r[0] for r in rows}) == accepted and len({r[1] for r in rows}) == accepted
    assert {r[2] for r in rows} == {"interrupted"}
