"""The `qiao` command as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest
from gateway import CEILING, QiaoProcess, clean_env, eventually, group_alive

from qiao import __version__

QIAO = [sys.executable, "-m", "qiao"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def demo() -> Iterator[tuple[QiaoProcess, int, str, str]]:
    port = _free_port()
    with QiaoProcess("serve", "--demo", "--listen", f"127.0.0.1:{port}") as gw:
        seen = gw.wait_ready()
        key = re.search(r"accepts the key\s+(\S+)", seen)
        assert key, seen
        yield gw, port, key.group(1), seen


def _chat(port: int, key: str, model: str = "m") -> int:
    """One non-streaming chat on a new connection; the HTTP status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CEILING)
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` (a bind without SO_REUSEPORT succeeds)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _workers_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "q.yaml"
    cfg.write_text(f"""
listen: 127.0.0.1:{port}
providers: {{m: {{type: mock}}}}
models: {{m: [{{provider: m}}]}}
keys: [{{name: k, key: sk-test-workers-key}}]
storage: {{url: "sqlite:///{tmp_path / "w.db"}", journal_dir: "{tmp_path / "journal"}"}}
server: {{access_log: false}}
""")
    return cfg


def test_version() -> None:
    out = subprocess.run(
        [*QIAO, "version"], capture_output=True, text=True, check=True, timeout=CEILING
    )
    assert out.stdout.strip() == f"qiao {__version__}"


def test_demo_answers_the_sdk_with_a_generated_key(demo: tuple) -> None:
    _gw, port, key, _seen = demo
    assert key.startswith("sk-qiao-") and len(key) > 30
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    reply = c.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert "mock provider" in (reply.choices[0].message.content or "")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-guess-0000", max_retries=0
        ).models.list()


def test_demo_logs_one_json_line_per_request_without_keys(demo: tuple) -> None:
    gw, port, key, _ = demo
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    c.chat.completions.create(model="qiao-mock", messages=[{"role": "user", "content": "hi"}])
    gw.send_signal(signal.SIGTERM)
    assert gw.wait() == 0
    err = gw.wait_closed().split(" ready on ", 1)[1]  # what it logged after start-up
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["msg"] == "request" and rec["status"] == 200 and rec["key"] == "generated"
    assert rec["model"] == "qiao-mock" and rec["provider"] == "mock"
    for field in ("request_id", "latency_ms", "upstream_ms", "overhead_ms"):
        assert field in rec
    assert key not in err


def test_ready_line_reports_the_start_up_time(demo: tuple) -> None:
    # Only that the figure is reported: how fast start-up is (median, pinned) is measured in
    # bench/ and docs/benchmarks.md, never timed in a test on a shared machine.
    *_, seen = demo
    assert re.search(r"ready on http://127\.0\.0\.1:\d+ \(\d+ ms\)", seen), seen


def test_sigterm_lets_a_stream_finish(tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "q.yaml"
    cfg.write_text(f"""
listen: 127.0.0.1:{port}
providers:
  slow: {{type: mock, mock: {{tokens_per_second: 10, reply: "one two three four five six"}}}}
models: {{slow: [{{provider: slow}}]}}
keys: [{{name: k, key: sk-test-sigterm-key}}]
server: {{access_log: false}}
""")
    with QiaoProcess("serve", "--config", str(cfg)) as gw:
        gw.wait_ready()
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test-sigterm-key")
        stream = c.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "x"}], stream=True
        )
        first = next(iter(stream))
        gw.send_signal(signal.SIGTERM)
        rest = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert (first.choices[0].delta.content or "") + rest == "one two three four five six"
        assert gw.wait() == 0


def test_config_check_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("providers:\n  m: {type: mock}\nmodels:\n  a: [{provider: m}]\n")
    out = subprocess.run(
        [*QIAO, "config", "check", str(good)], capture_output=True, text=True, timeout=CEILING
    )
    assert out.returncode == 0 and "OK" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  m:\n    type: mock\n    colour: blue\n")
    out = subprocess.run(
        [*QIAO, "config", "check", str(bad)], capture_output=True, text=True, timeout=CEILING
    )
    assert out.returncode == 2
    assert f"{bad}:4: providers.m.colour: unknown key" in out.stderr


def test_serve_without_any_provider_explains_what_to_do() -> None:
    out = subprocess.run(
        [*QIAO, "serve"], capture_output=True, text=True, env=clean_env(), timeout=CEILING
    )
    assert out.returncode == 2
    assert "OPENAI_API_KEY" in out.stderr and "--demo" in out.stderr


def test_serve_from_environment() -> None:
    port = _free_port()
    env = clean_env(
        DEEPSEEK_API_KEY="sk-env-deepseek",
        QIAO_API_KEY="sk-qiao-env-key",
        QIAO_LISTEN=f"127.0.0.1:{port}",
    )
    with QiaoProcess("serve", env=env) as gw:
        seen = gw.wait_ready()
        assert "accepts the key" not in seen  # a key was configured: none is generated


def test_workers_share_one_port(tmp_path: Path) -> None:
    port = _free_port()
    cfg = _workers_config(tmp_path, port)
    with QiaoProcess("serve", "--config", str(cfg), "--workers", "2") as gw:
        gw.wait_ready(count=2)  # both workers report ready
        pids: set[str] = set()

        def both_answered() -> bool:
            # a new connection each time: the kernel spreads them over the workers
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CEILING)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
                headers={
                    "Authorization": "Bearer sk-test-workers-key",
                    "Content-Type": "application/json",
                },
            )
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 200
            pids.add(str(resp.getheader("x-request-id"))[4:14])  # the per-process id prefix
            return len(pids) == 2

        eventually(both_answered, "requests reached both workers")
        journals = sorted(p.name for p in (tmp_path / "journal").iterdir() if p.is_dir())
        assert journals == ["worker-0", "worker-1"]
        gw.send_signal(signal.SIGTERM)
        assert gw.wait() == 0


def test_killing_the_supervisor_takes_its_workers_and_the_port_with_it(tmp_path: Path) -> None:
    port = _free_port()
    cfg = _workers_config(tmp_path, port)
    with QiaoProcess("serve", "--config", str(cfg), "--workers", "2") as gw:
        gw.wait_ready(count=2)
        assert _chat(port, "sk-test-workers-key") == 200
        os.kill(gw.proc.pid, signal.SIGKILL)  # the supervisor only
        assert gw.wait() == -signal.SIGKILL
        eventually(lambda: not group_alive(gw.pgid), "the workers exited")
        eventually(lambda: _port_free(port), "the port is free")


def test_sighup_does_not_stop_a_single_gateway() -> None:
    port = _free_port()
    with QiaoProcess("serve", "--demo", "--listen", f"127.0.0.1:{port}") as gw:
        key = re.search(r"accepts the key\s+(\S+)", gw.wait_ready())
        assert key
        gw.send_signal(signal.SIGHUP)
        gw.wait_for("SIGHUP ignored")
        assert _chat(port, key.group(1), "qiao-mock") == 200
        gw.send_signal(signal.SIGTERM)
        assert gw.wait() == 0


def test_sighup_does_not_stop_the_supervisor_or_its_workers(tmp_path: Path) -> None:
    port = _free_port()
    cfg = _workers_config(tmp_path, port)
    with QiaoProcess("serve", "--config", str(cfg), "--workers", "2") as gw:
        gw.wait_ready(count=2)
        os.killpg(gw.pgid, signal.SIGHUP)  # what a closed terminal sends to the whole group
        gw.wait_for("SIGHUP ignored", count=3)  # the supervisor and both workers
        gw.send_signal(signal.SIGHUP)  # the supervisor alone: not passed on as a stop
        gw.wait_for("SIGHUP ignored", count=4)
        for _ in range(6):  # new connections: both workers are asked
            assert _chat(port, "sk-test-workers-key") == 200
        assert gw.proc.poll() is None
        assert "restarting" not in gw.stderr
        gw.send_signal(signal.SIGTERM)
        assert gw.wait() == 0
