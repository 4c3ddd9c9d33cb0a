"""``qiao serve --workers N``: N gateway processes sharing one port (SO_REUSEPORT).

The parent only supervises: it starts the workers, restarts one that dies (at most a few
times a minute), and passes SIGTERM/SIGINT on so each worker drains its streams and its usage
journal. Each worker has its own usage journal directory; keys, limits (with Redis) and
budgets are shared through the store.

Workers never outlive the supervisor, however it dies (``kill -9`` included), so no orphan
keeps the port: on Linux each worker asks the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``), and everywhere it watches a pipe whose only write end the supervisor
holds — the kernel closes it with the supervisor, and the worker drains and exits on EOF.
SIGHUP is not a reason to stop: reload does not exist yet, so it is logged and ignored, and
the supervisor does not pass it on.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

__all__ = [
    "WORKER_ENV",
    "hangup",
    "ignore_hangup",
    "supervise",
    "watch_supervisor",
    "worker_index",
]

WORKER_ENV = "QIAO_WORKER_INDEX"
_PIPE_ENV = "QIAO__SUPERVISOR_FD"  # the worker's read end of the supervisor's lifeline
_RESTARTS_PER_MINUTE = 5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _pdeathsig() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGTERM the child when the supervisor dies, or None
    where ``prctl`` does not exist (the pipe still stops the worker there)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:  # runs in the child, between fork and exec; survives the exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return arm


def supervise(argv: Sequence[str], workers: int, env: dict[str, str]) -> int:
    """Run ``python -m qiao <argv>`` ``workers`` times; returns when all have stopped."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    restarts: list[float] = []
    stopping = False
    lifeline, held = os.pipe()  # neither end inherited unless passed: `held` never is
    arm = _pdeathsig()

    def start(index: int) -> None:
        child_env = {**env, WORKER_ENV: str(index), _PIPE_ENV: str(lifeline)}
        cmd = [sys.executable, "-m", "qiao", *argv]  # our own argv, re-run
        procs[index] = subprocess.Popen(  # noqa: S603
            cmd, env=child_env, pass_fds=(lifeline,), preexec_fn=arm
        )

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: hangup())  # not passed on
    try:
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
                    print(
                        f"qiao: worker {index} keeps dying (exit {code}); stopping", file=sys.stderr
                    )
                    forward(signal.SIGTERM, None)
                    continue
                restarts.append(now)
                print(f"qiao: worker {index} exited ({code}); restarting", file=sys.stderr)
                start(index)
    finally:
        os.close(lifeline)
        os.close(held)  # any worker still running sees EOF and drains
    return 0


def worker_index() -> int | None:
    value = os.environ.get(WORKER_ENV)
    return int(value) if value and value.isdigit() else None


def hangup() -> None:
    """What SIGHUP does, in the supervisor and in every gateway process: say it is ignored."""
    # One write per line: workers share this stderr, and print() writes the newline apart.
    sys.stderr.write("qiao: SIGHUP ignored: reload is not supported yet\n")


def ignore_hangup() -> None:
    """Until the event loop logs it: a SIGHUP during start-up must not kill the gateway."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def watch_supervisor(loop: asyncio.AbstractEventLoop, on_gone: Callable[[], None]) -> None:
    """In a worker: call ``on_gone`` once the supervisor is gone (the lifeline reads EOF),
    also if it died before this worker got here. A no-op outside ``--workers``."""
    value = os.environ.get(_PIPE_ENV)
    if worker_index() is None or not value or not value.isdigit():
        return
    fd = int(value)

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EOF: every write end is closed, so the supervisor is gone
            loop.remove_reader(fd)
            os.close(fd)
            print("qiao: the supervisor is gone; stopping", file=sys.stderr)
            on_gone()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
