"""``qiao serve --workers N``: N gateway processes sharing one port (SO_REUSEPORT).

The parent only supervises: it starts the workers, restarts one that dies (at most a few
times a minute), and passes SIGTERM/SIGINT on so each worker drains its streams and its usage
journal. Each worker has its own usage journal directory; keys, limits (with Redis) and
budgets are shared through the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

__all__ = ["WORKER_ENV", "supervise"]

WORKER_ENV = "QIAO_WORKER_INDEX"
_RESTARTS_PER_MINUTE = 5


def supervise(argv: Sequence[str], workers: int, env: dict[str, str]) -> int:
    """Run ``python -m qiao <argv>`` ``workers`` times; returns when all have stopped."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    restarts: list[float] = []
    stopping = False

    def start(index: int) -> None:
        child_env = {**env, WORKER_ENV: str(index)}
        cmd = [sys.executable, "-m", "qiao", *argv]  # our own argv, re-run
        procs[index] = subprocess.Popen(cmd, env=child_env)  # noqa: S603

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(workers):
        start(i)
    while procs:
        time.sleep(0.2)
        for index, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del procs[index]
            if stopping:
                continue
            now = time.monotonic()
            restarts[:] = [t for t in restarts if now - t < 60]
            if len(restarts) >= _RESTARTS_PER_MINUTE:
                print(f"qiao: worker {index} keeps dying (exit {code}); stopping", file=sys.stderr)
                forward(signal.SIGTERM, None)
                continue
            restarts.append(now)
            print(f"qiao: worker {index} exited ({code}); restarting", file=sys.stderr)
            start(index)
    return 0


def worker_index() -> int | None:
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None
