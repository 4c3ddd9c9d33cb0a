"""Run a real Qiao server on 127.0.0.1 for tests: in a background thread (:class:`Gateway`), or
as a real process with real signals (:class:`QiaoProcess`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import orjson
import uvloop

from qiao.app import start_server
from qiao.config import Config, loads
from qiao.observability.accesslog import AccessLog

CEILING = 60.0  # seconds a condition may take on a loaded machine: a ceiling, not an estimate


class LogSink:
    """Collects access-log lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, s: str) -> int:
        self.lines.extend(s.splitlines(keepends=True))  # one write may carry several lines
        return len(s)

    def flush(self) -> None:
        pass

    @property
    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def last(self, quiet: float = 0.05, timeout: float = 3.0) -> dict[str, Any]:
        """The last record once no new line arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            if len(self.lines) == seen and seen > 0:
                break
            seen = len(self.lines)
            time.sleep(quiet)
        return self.records[-1]

    def wait_for(self, count: int, timeout: float = CEILING) -> list[dict[str, Any]]:
        """The records once there are at least ``count`` (a client may finish reading before
        the gateway writes its log line)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.records

    def wait_until(
        self, match: Callable[[dict[str, Any]], bool], since: int = 0, timeout: float = CEILING
    ) -> dict[str, Any]:
        """The first record after line ``since`` that ``match`` accepts (lines of requests that
        finished earlier may still be arriving: the log is written once per loop iteration)."""
        deadline = time.monotonic() + timeout
        while True:
            for rec in self.records[since:]:
                if match(rec):
                    return rec
            if time.monotonic() > deadline:
                raise AssertionError(f"no such access-log record in {self.records[since:]}")
            time.sleep(0.01)


class Gateway:
    def __init__(self, config: Config | str, env: dict[str, str] | None = None) -> None:
        self.config = loads(config, env=env or {}) if isinstance(config, str) else config
        if "storage" not in self.config.model_fields_set:
            # Tests keep nothing on disk unless they ask for a store.
            storage = self.config.storage.model_copy(update={"url": "memory://"})
            self.config = self.config.model_copy(update={"storage": storage})
        self.log = LogSink()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> Gateway:
        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                runner, self.port = await start_server(
                    self.config, access_log=AccessLog(self.log), port=0
                )
                self.app = runner.app  # tests may reach the engine: app[qiao.app.ENGINE]
            except BaseException as exc:  # surface start-up errors in the test thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            await self._stop.wait()
            await runner.cleanup()

        def run() -> None:
            self._loop = uvloop.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(CEILING):
            raise AssertionError(f"the gateway did not start within {CEILING:g} s")
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop and self._stop and self._thread:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(CEILING)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- real processes


def eventually(condition: Callable[[], bool], what: str, timeout: float = CEILING) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds (a ceiling)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without provider keys and ``QIAO_*`` settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith("QIAO_")
    }
    env.update(extra)
    return env


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies waiting to be reaped by
    whoever adopted them do not count: they hold no port and run no code)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: ask the kernel, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class ChildProcess:
    """A process in a session of its own, so it and every process it starts are one process
    group, and :meth:`kill` (also on leaving the ``with`` block, whatever happened in it) kills
    the whole group. Its stderr is read by a thread, so every wait has a ceiling instead of
    blocking on a read that never returns."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env() if env is None else env,
            start_new_session=True,
        )
        self.pgid = self.proc.pid
        self._lines: list[str] = []
        self._eof = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for(self, text: str, count: int = 1, timeout: float = CEILING) -> str:
        """stderr so far, once it holds ``text`` ``count`` times (counted in the whole text:
        several processes share one stderr, and their lines may interleave); fails if the
        process closes its stderr (exits) first, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while "".join(self._lines).count(text) < count:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "exited" if self._eof else f"not within {timeout:g} s"
                    raise AssertionError(f"{text!r} x{count}: {why}: {''.join(self._lines)!r}")
                self._changed.wait(left)
            return "".join(self._lines)

    def wait_closed(self, timeout: float = CEILING) -> str:
        """All of stderr, once every process holding it has exited."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._eof, timeout):
                raise AssertionError(f"stderr still open after {timeout:g} s")
            return "".join(self._lines)

    def wait_ready(self, count: int = 1) -> str:
        """stderr so far, once ``count`` processes said they are ready."""
        return self.wait_for(" ready on ", count)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = CEILING) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL to the whole group (the workers too), then reap our child."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class QiaoProcess(ChildProcess):
    """``python -m qiao <args>`` (``serve``: with its workers, one process group)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__([sys.executable, "-m", "qiao", *args], env=env)
