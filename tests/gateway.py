"""Run a real Qiao server on 127.0.0.1 in a background thread, for tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import uvloop

from qiao.app import start_server
from qiao.config import Config, loads
from qiao.observability.accesslog import AccessLog


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

    def wait_for(self, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        """The records once there are at least ``count`` (a client may finish reading before
        the gateway writes its log line)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.records

    def wait_until(
        self, match: Callable[[dict[str, Any]], bool], since: int = 0, timeout: float = 3.0
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
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop and self._stop and self._thread:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(15)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
