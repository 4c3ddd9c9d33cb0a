"""The `qiao` command as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from qiao import __version__

QIAO = [sys.executable, "-m", "qiao"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("QIAO_")
    }
    env.update(extra)
    return env


def _wait_ready(proc: subprocess.Popen[str], timeout: float = 10) -> tuple[str, float]:
    """Read stderr until the ready line; return what was read and the seconds it took."""
    t0 = time.monotonic()
    seen = ""
    assert proc.stderr is not None
    while time.monotonic() - t0 < timeout:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        if " ready on " in line:
            return seen, time.monotonic() - t0
    raise AssertionError(f"qiao did not become ready: {seen!r}")


@pytest.fixture
def demo() -> Iterator[tuple[subprocess.Popen[str], int, str, float]]:
    port = _free_port()
    proc = subprocess.Popen(
        [*QIAO, "serve", "--demo", "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        seen, took = _wait_ready(proc)
        key = re.search(r"accepts the key\s+(\S+)", seen)
        assert key, seen
        yield proc, port, key.group(1), took
    finally:
        proc.kill()
        proc.wait()


def test_version() -> None:
    out = subprocess.run([*QIAO, "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"qiao {__version__}"


def test_demo_answers_the_sdk_with_a_generated_key(demo: tuple) -> None:
    _proc, port, key, _took = demo
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
    proc, port, key, _ = demo
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
    c.chat.completions.create(model="qiao-mock", messages=[{"role": "user", "content": "hi"}])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["msg"] == "request" and rec["status"] == 200 and rec["key"] == "generated"
    assert rec["model"] == "qiao-mock" and rec["provider"] == "mock"
    for field in ("request_id", "latency_ms", "upstream_ms", "overhead_ms"):
        assert field in rec
    assert key not in err


def test_startup_is_fast(demo: tuple) -> None:
    *_, took = demo
    assert took < 5  # the figure we report (median, pinned) lives in docs/benchmarks.md


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
    proc = subprocess.Popen(
        [*QIAO, "serve", "--config", str(cfg)], stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        _wait_ready(proc)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test-sigterm-key")
        stream = c.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "x"}], stream=True
        )
        first = next(iter(stream))
        proc.send_signal(signal.SIGTERM)
        rest = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert (first.choices[0].delta.content or "") + rest == "one two three four five six"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_config_check_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("providers:\n  m: {type: mock}\nmodels:\n  a: [{provider: m}]\n")
    out = subprocess.run([*QIAO, "config", "check", str(good)], capture_output=True, text=True)
    assert out.returncode == 0 and "OK" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  m:\n    type: mock\n    colour: blue\n")
    out = subprocess.run([*QIAO, "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{bad}:4: providers.m.colour: unknown key" in out.stderr


def test_serve_without_any_provider_explains_what_to_do() -> None:
    out = subprocess.run([*QIAO, "serve"], capture_output=True, text=True, env=_env(), timeout=20)
    assert out.returncode == 2
    assert "OPENAI_API_KEY" in out.stderr and "--demo" in out.stderr


def test_serve_from_environment(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*QIAO, "serve"],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(
            DEEPSEEK_API_KEY="sk-env-deepseek",
            QIAO_API_KEY="sk-qiao-env-key",
            QIAO_LISTEN=f"127.0.0.1:{port}",
        ),
    )
    try:
        seen, _ = _wait_ready(proc)
        assert "accepts the key" not in seen  # a key was configured: none is generated
    finally:
        proc.kill()
        proc.wait()


def test_workers_share_one_port(tmp_path: Path) -> None:
    port = _free_port()
    cfg = tmp_path / "q.yaml"
    cfg.write_text(f"""
listen: 127.0.0.1:{port}
providers: {{m: {{type: mock}}}}
models: {{m: [{{provider: m}}]}}
keys: [{{name: k, key: sk-test-workers-key}}]
storage: {{url: "sqlite:///{tmp_path / "w.db"}", journal_dir: "{tmp_path / "journal"}"}}
server: {{access_log: false}}
""")
    proc = subprocess.Popen(
        [*QIAO, "serve", "--config", str(cfg), "--workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        _wait_ready(proc)
        _wait_ready(proc)  # both workers report ready
        pids: set[str] = set()
        deadline = time.monotonic() + 15
        while len(pids) < 2 and time.monotonic() < deadline:
            # a new connection each time: the kernel spreads them over the workers
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
                headers={"Authorization": "Bearer sk-test-workers-key"},
            )
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            pids.add(str(resp.getheader("x-request-id"))[4:14])  # the per-process id prefix
            conn.close()
        assert len(pids) == 2, pids
        assert sorted(p.name for p in (tmp_path / "journal").iterdir()) == ["worker-0", "worker-1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
