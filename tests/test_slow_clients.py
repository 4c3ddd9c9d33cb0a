"""Clients that stop reading, and keys that hog a provider's pool, over real sockets.

A fake OpenAI upstream streams without end, as fast as the gateway takes it; raw clients with a
4 KB receive buffer send a streaming request and never read. The gateway must cut them at the
attempt's total deadline (or sooner, when a write to them stalls), freeing the upstream
connection, and a key may hold only its share of a provider's connection pool.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import orjson
import pytest
import requests
from aiohttp import web
from gateway import Gateway

KEY_A = "sk-qiao-slow-clients-key-a"
KEY_B = "sk-qiao-slow-clients-key-b"
ADMIN = "sk-qiao-slow-clients-admin-key-0123456789"
EVENT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"' + b"x" * 1000 + b'"},"finish_reason":null}]}\n\n'
)
DONE = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)
CEILING = 30.0  # seconds: a generous bound for conditions that should hold within ~10 s


def wait_for(condition: Callable[[], bool], timeout: float = CEILING) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Upstream:
    """A fake OpenAI-type upstream on 127.0.0.1. Streaming: model ``flood`` sends events
    without end (until the gateway closes the connection), ``burst`` sends 8 MB of events at
    once and ends, ``hold`` sends one event and waits for :meth:`release`. Not streaming:
    ``big`` answers 4 MB, anything else a small completion."""

    def __init__(self) -> None:
        self.port = 0
        self.started = 0
        self.open = 0
        self.closed = 0  # streams whose connection the gateway closed under them
        self._released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def release(self) -> None:
        """Let the ``hold`` streams finish."""
        if self._loop is not None and self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if not body.get("stream"):
            return web.json_response(
                completion("x" * 4_000_000 if body["model"] == "big" else "ok")
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.started += 1
        self.open += 1
        try:
            if body["model"] == "flood":
                await self._flood(resp)
            elif body["model"] == "burst":
                await resp.write(EVENT * 8000 + DONE)
                await resp.write_eof()
            else:
                await resp.write(EVENT)
                assert self._released is not None
                await self._released.wait()
                await resp.write(DONE)
                await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            self.closed += 1
        finally:
            self.open -= 1
        return resp

    @staticmethod
    async def _flood(resp: web.StreamResponse) -> None:
        for n in range(10_000_000):
            await resp.write(EVENT)  # raises once the gateway has closed the connection
            if n % 64 == 0:
                await asyncio.sleep(0)

    def __enter__(self) -> Upstream:
        ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            self._released = asyncio.Event()
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._handle)
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            await self._stop.wait()
            await runner.cleanup()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(main())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        if self._loop and self._stop and self._thread:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(15)


def completion(text: str) -> dict[str, object]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def config(port: int, timeouts: str = "idle: 3, total: 8", pool: int = 4) -> str:
    return f"""
admin_key: {ADMIN}
providers:
  up:
    type: openai
    base_url: http://127.0.0.1:{port}/v1
    api_key: sk-upstream-test-key
    timeouts: {{{timeouts}}}
    max_connections: {pool}
models:
  flood: [{{provider: up}}]
  hold: [{{provider: up}}]
  small: [{{provider: up}}]
  burst: [{{provider: up}}]
  big: [{{provider: up}}]
keys:
  - {{name: a, key: {KEY_A}}}
  - {{name: b, key: {KEY_B}}}
"""


@pytest.fixture()
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def stalled_client(port: int, key: str, model: str = "flood", stream: bool = True) -> socket.socket:
    """A client with a 4 KB receive buffer that sends a request and does not read."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    body = orjson.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return s


def closed_by_peer(s: socket.socket, timeout: float = CEILING) -> bool:
    """Read what is buffered; True once the gateway has closed (FIN or RST) the connection."""
    s.settimeout(1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not s.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            continue
    return False


def test_clients_that_never_read_are_cut_at_the_total_deadline(upstream: Upstream) -> None:
    """``idle: 3, total: 8``, five streaming clients that never read (the case reported)."""
    with Gateway(config(upstream.port, pool=16)) as gw:
        since = len(gw.log.lines)
        t0 = time.monotonic()
        clients = [stalled_client(gw.port, KEY_A) for _ in range(5)]
        try:
            assert wait_for(lambda: upstream.started == 5)
            assert wait_for(lambda: upstream.closed == 5), "upstream connections still held"
            took = time.monotonic() - t0
            assert upstream.open == 0
            assert took < 8 + 10  # total deadline plus a generous margin
            for s in clients:
                assert closed_by_peer(s), "client connection still open"
        finally:
            for s in clients:
                s.close()
        assert wait_for(lambda: len(flood_records(gw, since)) == 5)
        assert {r["error"] for r in flood_records(gw, since)} <= {"client_stalled", "total_timeout"}
        assert wait_for(lambda: len(usage_rows(gw, "flood")) == 5)
        assert {r["status"] for r in usage_rows(gw, "flood")} == {"error"}


def flood_records(gw: Gateway, since: int = 0) -> list[dict[str, object]]:
    return [r for r in gw.log.records[since:] if r.get("model") == "flood"]


def usage_rows(gw: Gateway, model: str) -> list[dict[str, object]]:
    r = requests.get(
        f"{gw.url}/admin/usage", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    return [row for row in r.json()["data"] if row.get("model") == model]


def test_a_stalled_write_is_cut_before_the_total_deadline(upstream: Upstream) -> None:
    """``write_stall: 2`` with a total of 60 s: the stall, not the total, ends the stream."""
    with Gateway(config(upstream.port, "idle: 3, total: 60, write_stall: 2")) as gw:
        t0 = time.monotonic()
        s = stalled_client(gw.port, KEY_A)
        try:
            assert wait_for(lambda: upstream.closed == 1), "upstream connection still held"
            assert time.monotonic() - t0 < 2 + 15
            assert closed_by_peer(s)
        finally:
            s.close()
        rec = gw.log.wait_until(lambda r: r.get("model") == "flood", timeout=CEILING)
        assert rec["error"] == "client_stalled"


def test_a_big_answer_to_a_client_that_never_reads_is_cut(upstream: Upstream) -> None:
    """A non-streaming answer too big for the socket buffers is written under the same bounds
    (aiohttp would otherwise wait for the client for ever, after the request was logged)."""
    with Gateway(config(upstream.port, "idle: 3, total: 60, write_stall: 2")) as gw:
        s = stalled_client(gw.port, KEY_A, "big", stream=False)
        try:
            rec = gw.log.wait_until(lambda r: r.get("model") == "big", timeout=CEILING)
            assert rec["error"] == "client_stalled"
            assert closed_by_peer(s)
        finally:
            s.close()


def test_a_client_that_pauses_is_not_blamed_on_the_upstream(upstream: Upstream) -> None:
    """While the relay waits for a slow client it does not read the upstream, and that time
    is not the upstream's idle time: a client that pauses for three idle periods (but less
    than ``write_stall``) still gets the whole stream."""
    with Gateway(config(upstream.port, "idle: 1, total: 60, write_stall: 30")) as gw:
        s = stalled_client(gw.port, KEY_A, "burst")
        try:
            time.sleep(3)  # the pause being tested, not a wait for a condition
            data = read_all(s)
        finally:
            s.close()
        assert data.endswith(b"\r\n0\r\n\r\n"), data[-300:]  # the whole chunked body
        assert b"data: [DONE]" in data[-200:]
        rec = gw.log.wait_until(lambda r: r.get("model") == "burst", timeout=CEILING)
        assert rec.get("error") is None


def read_all(s: socket.socket) -> bytes:
    """Everything until the end of a chunked response (or the connection closing)."""
    s.settimeout(CEILING)
    data = bytearray()
    while not data.endswith(b"\r\n0\r\n\r\n"):
        part = s.recv(1 << 20)
        if not part:
            break
        data += part
    return bytes(data)


def post(gw: Gateway, key: str, model: str, stream: bool) -> requests.Response:
    return requests.post(
        f"{gw.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
        stream=stream,
        timeout=CEILING,
    )


def anthropic_post(gw: Gateway, key: str) -> requests.Response:
    return requests.post(
        f"{gw.url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={"model": "small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        timeout=CEILING,
    )


def test_one_key_cannot_take_the_whole_pool(upstream: Upstream) -> None:
    """``max_connections: 4``: a key may hold half the pool; the next call is a 429 in the
    caller's protocol, other keys still get through, and slots come back when calls end."""
    with Gateway(config(upstream.port)) as gw:
        held = [post(gw, KEY_A, "hold", stream=True) for _ in range(2)]
        assert [r.status_code for r in held] == [200, 200]
        assert wait_for(lambda: upstream.open == 2)

        refused = post(gw, KEY_A, "small", stream=False)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "upstream_connections_exceeded"
        in_anthropic = anthropic_post(gw, KEY_A)
        assert in_anthropic.status_code == 429
        assert in_anthropic.json()["type"] == "error"
        assert in_anthropic.json()["error"]["type"] == "rate_limit_error"

        assert post(gw, KEY_B, "small", stream=False).status_code == 200
        ready = requests.get(f"{gw.url}/readyz", timeout=10).json()
        assert "up" not in ready["degraded"]  # a greedy key is not the provider's fault

        upstream.release()
        for r in held:
            assert b"[DONE]" in r.content
        assert wait_for(lambda: upstream.open == 0)
        for _ in range(3):  # slots were given back, also by non-streaming calls
            assert post(gw, KEY_A, "small", stream=False).status_code == 200


def test_per_key_share_is_configurable(upstream: Upstream) -> None:
    """A single-key deployment gives its key the whole pool (``max_connections_per_key``)."""
    cfg = config(upstream.port).replace(
        "    max_connections: 4\n", "    max_connections: 4\n    max_connections_per_key: 4\n"
    )
    with Gateway(cfg) as gw:
        held = [post(gw, KEY_A, "hold", stream=True) for _ in range(2)]
        assert [r.status_code for r in held] == [200, 200]
        assert wait_for(lambda: upstream.open == 2)
        assert post(gw, KEY_A, "small", stream=False).status_code == 200  # past half the pool
        upstream.release()
        for r in held:
            assert b"[DONE]" in r.content
