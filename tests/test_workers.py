"""The ``--workers`` supervisor's lifelines, each on its own: the parent-death signal (Linux)
and the pipe (everywhere). Together, in a real fleet: tests/test_cli.py."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
from gateway import CEILING, ChildProcess, eventually, group_alive

from qiao import workers

ROOT = Path(__file__).resolve().parents[1]


def test_a_worker_stops_when_the_supervisor_pipe_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    lifeline, held = os.pipe()
    monkeypatch.setenv(workers.WORKER_ENV, "1")
    monkeypatch.setenv("QIAO__SUPERVISOR_FD", str(lifeline))

    async def main() -> None:
        gone = asyncio.Event()
        workers.watch_supervisor(asyncio.get_running_loop(), gone.set)
        await asyncio.sleep(0.05)
        assert not gone.is_set()  # the supervisor is alive: nothing to read, no EOF
        os.close(held)  # what the kernel does when the supervisor dies, however it dies
        await asyncio.wait_for(gone.wait(), CEILING)

    asyncio.run(main())


def test_the_pipe_is_only_watched_in_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(workers.WORKER_ENV, raising=False)
    monkeypatch.setenv("QIAO__SUPERVISOR_FD", "0")

    async def main() -> None:
        workers.watch_supervisor(asyncio.get_running_loop(), lambda: None)  # no reader on 0

    asyncio.run(main())


# A parent that starts a child the way the supervisor does, minus the pipe: only the kernel's
# parent-death signal can stop the child when the parent is killed.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from qiao.workers import _pdeathsig

    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], preexec_fn=_pdeathsig()
    )
    print("child", child.pid, file=sys.stderr, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_the_kernel_stops_a_worker_whose_supervisor_was_killed(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with ChildProcess([sys.executable, str(script)], env=env) as parent:
        parent.wait_for("child ")
        os.kill(parent.proc.pid, signal.SIGKILL)
        assert parent.wait() == -signal.SIGKILL
        eventually(lambda: not group_alive(parent.pgid), "the child died with its parent")
