"""Qiao benchmark: paths, child processes, venvs and exported revisions (split from run.py)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from procfs import (
    log,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
LITELLM_VENV = BENCH / ".litellm-venv"
ALT_VENV = BENCH / ".alt-venv"


# --------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def spawn(name: str, cmd: list[str], core: str, log_path: Path, env: dict[str, str]) -> Proc:
    logf = open(log_path, "ab")  # handed to the child
    started = time.perf_counter()
    popen = subprocess.Popen(
        ["taskset", "-c", core, *cmd],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=REPO,
    )
    logf.close()
    return Proc(name, popen, log_path, started)


def wait_ready(proc: Proc, port: int, path: str, timeout: float) -> float:
    """Seconds from spawn to the first 200 on ``path``; raises on timeout or exit."""
    deadline = proc.started + timeout
    while time.perf_counter() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}"
            )
        if http_get_status(port, path, timeout=0.5) == 200:
            return time.perf_counter() - proc.started
        time.sleep(0.01)
    raise RuntimeError(f"{proc.name} not ready within {timeout:g} s; see {proc.log_path}")


def trim_log(path: Path, keep: int = 64 * 1024) -> int:
    """Keep the head and tail of a large log; return its line count."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    with open(path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if size > 4 * keep:
        with open(path, "rb") as f:
            head = f.read(keep)
            f.seek(size - keep)
            tail = f.read()
        path.write_bytes(head + b"\n[... trimmed by bench/run.py ...]\n" + tail)
    return lines


# --------------------------------------------------------------------- venvs


def ensure_venv(venv: Path, packages: list[str], probe: str, timeout: float = 900) -> str | None:
    """Create ``venv`` and install ``packages`` unless ``probe`` exists; None or why not."""
    if (venv / "bin" / probe).exists():
        return None
    log(f"installing {' '.join(packages)} into {venv.relative_to(REPO)} (once)")
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *packages],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return f"install failed: {exc}"
    return None if (venv / "bin" / probe).exists() else f"{probe} missing after install"


def export_rev(rev: str, dest: Path) -> tuple[str, Path]:
    """``git archive`` of qiao/ at ``rev`` into ``dest``: (short sha, dest)."""
    dest.mkdir(parents=True, exist_ok=True)
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", sha, "qiao"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return sha, dest
