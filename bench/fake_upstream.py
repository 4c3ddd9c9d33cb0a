"""A cheap OpenAI-compatible fake upstream for the benchmark.

A raw asyncio protocol on uvloop with a minimal HTTP/1.1 parser (keep-alive,
Content-Length and chunked request bodies): several times cheaper per request
than an aiohttp server, so that the fake is never what limits a gateway.

It serves ``POST /v1/chat/completions`` (and ``/chat/completions``):

* non-streaming: one small, valid ``chat.completion`` object with ``usage``;
* streaming (``"stream": true``): 20 ``chat.completion.chunk`` SSE events
  (``--chunks``), the ``include_usage`` chunk when ``stream_options`` asks for
  it, then ``data: [DONE]``;
* ``POST /v1/messages`` (Anthropic's Messages API): a ``message`` object with
  ``usage``, or with ``"stream": true`` Anthropic's SSE (``event:`` lines):
  ``message_start``, ``content_block_start``, ``ping``, 20 ``text_delta``
  ``content_block_delta`` events, ``content_block_stop``, ``message_delta``
  (stop reason, usage), ``message_stop``;
* ``GET /health`` and ``GET /v1/models`` for readiness checks.

Behaviour comes from the command line (defaults) and can be overridden per
request by the ``model`` name, which every gateway forwards unchanged: dash
separated tokens ``d<ms>`` (delay before the response), ``c<ms>`` (delay
between stream chunks), ``n<count>`` (chunks per stream, 2..10000) and
``hold<s>`` (stream: send the first chunk, then keep the stream open that many
seconds before finishing). ``bench-d50`` answers after
50 ms; ``bench-hold20`` holds a stream open 20 s. The same keys work in the
query string for direct use: ``?delay_ms=50&chunk_delay_ms=1&hold_s=20``.

    python bench/fake_upstream.py --port 9001 [--delay-ms 50] [--chunk-delay-ms 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import cast
from urllib.parse import parse_qsl

import orjson

CREATED = 1_700_000_000
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
MAX_HOLD_S = 120.0
MAX_CHUNKS = 10_000


@dataclass(frozen=True, slots=True)
class Behaviour:
    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    hold_s: float = 0.0
    chunks: int = 20

    def override(self, model: str, query: bytes) -> Behaviour:
        b = self
        for tok in model.split("-"):
            try:
                if tok.startswith("hold") and len(tok) > 4:
                    b = replace(b, hold_s=min(float(tok[4:]), MAX_HOLD_S))
                elif tok.startswith("d") and len(tok) > 1:
                    b = replace(b, delay_ms=float(tok[1:]))
                elif tok.startswith("c") and len(tok) > 1:
                    b = replace(b, chunk_delay_ms=float(tok[1:]))
                elif tok.startswith("n") and len(tok) > 1:
                    b = replace(b, chunks=max(2, min(int(tok[1:]), MAX_CHUNKS)))
            except ValueError:
                continue
        if query:
            q = dict(parse_qsl(query.decode("latin-1")))
            b = replace(
                b,
                delay_ms=float(q.get("delay_ms", b.delay_ms)),
                chunk_delay_ms=float(q.get("chunk_delay_ms", b.chunk_delay_ms)),
                hold_s=min(float(q.get("hold_s", b.hold_s)), MAX_HOLD_S),
            )
        return b


def _http(status: str, ctype: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype
        + b"\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nx-request-id: req_fake\r\nopenai-processing-ms: 1\r\n\r\n" + body
    )  # fmt: skip


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nx-request-id: req_fake\r\nTransfer-Encoding: chunked\r\n\r\n"
)
CHUNKED_END = b"0\r\n\r\n"
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
WORDS = ("Hello", " from", " the", " fake", " upstream", ",", " one", " token", " at", " a")


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def completion_bytes(model: str) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the fake upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
    return _http("200 OK", b"application/json", orjson.dumps(body))


def stream_events(model: str, chunks: int, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed answer, each already framed as an HTTP chunk."""
    base: dict[str, object] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    if include_usage:
        base["usage"] = None
    events = []
    for i in range(chunks):
        last = i == chunks - 1
        delta: dict[str, object] = {}
        if i == 0:
            delta["role"] = "assistant"
        if not last:
            delta["content"] = WORDS[i % len(WORDS)]
        choice = {"index": 0, "delta": delta, "logprobs": None,
                  "finish_reason": "stop" if last else None}  # fmt: skip
        events.append(b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n")
    if include_usage:
        events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": USAGE}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return [_chunked(e) for e in events]


def message_bytes(model: str) -> bytes:
    """A non-streaming Anthropic ``message`` answer."""
    body = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hello from the fake upstream."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7},
    }
    return _http("200 OK", b"application/json", orjson.dumps(body))


def _sse(name: str, obj: dict[str, object]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def message_events(model: str, deltas: int) -> list[bytes]:
    """Anthropic's SSE for one streamed answer of ``deltas`` text deltas, framed as HTTP chunks.

    Write 0 carries message_start, content_block_start, ping and the first delta (so that a held
    stream has delivered a token); writes 1..deltas-1 one delta each; the last write closes the
    block and the message (content_block_stop, message_delta with usage, message_stop).
    """
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1},
        },
    }
    head = (
        _sse("message_start", start)
        + _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
        )
        + _sse("ping", {"type": "ping"})
    )  # fmt: skip
    writes = []
    for i in range(deltas):
        delta = {"type": "text_delta", "text": WORDS[i % len(WORDS)]}
        ev = _sse(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
        writes.append(head + ev if i == 0 else ev)
    tail = (
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _sse(
            "message_delta",
            {"type": "message_delta",
             "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": deltas}},
        )
        + _sse("message_stop", {"type": "message_stop"})
    )  # fmt: skip
    writes.append(tail)
    return [_chunked(w) for w in writes]


class Fake:
    """Shared state: defaults and caches of pre-serialised answers."""

    def __init__(self, defaults: Behaviour) -> None:
        self.defaults = defaults
        self._behaviour: dict[tuple[str, bytes], Behaviour] = {}
        self._completion: dict[str, bytes] = {}
        self._stream: dict[tuple[str, int, bool], list[bytes]] = {}
        self._message: dict[str, bytes] = {}
        self._message_stream: dict[tuple[str, int], list[bytes]] = {}
        self.requests = 0
        self.open_streams = 0

    def behaviour(self, model: str, query: bytes) -> Behaviour:
        key = (model, query)
        b = self._behaviour.get(key)
        if b is None:
            b = self.defaults.override(model, query)
            if len(self._behaviour) < 4096:
                self._behaviour[key] = b
        return b

    def completion(self, model: str) -> bytes:
        out = self._completion.get(model)
        if out is None:
            out = completion_bytes(model)
            if len(self._completion) < 4096:
                self._completion[model] = out
        return out

    def stream(self, model: str, chunks: int, include_usage: bool) -> list[bytes]:
        key = (model, chunks, include_usage)
        out = self._stream.get(key)
        if out is None:
            out = stream_events(model, chunks, include_usage)
            if len(self._stream) < 4096:
                self._stream[key] = out
        return out

    def message(self, model: str) -> bytes:
        out = self._message.get(model)
        if out is None:
            out = message_bytes(model)
            if len(self._message) < 4096:
                self._message[model] = out
        return out

    def message_stream(self, model: str, chunks: int) -> list[bytes]:
        key = (model, chunks)
        out = self._message_stream.get(key)
        if out is None:
            out = message_events(model, chunks)
            if len(self._message_stream) < 4096:
                self._message_stream[key] = out
        return out


OK_JSON = _http("200 OK", b"application/json", b'{"status":"ok"}')
MODELS = _http(
    "200 OK",
    b"application/json",
    b'{"object":"list","data":[{"id":"bench","object":"model","created":1700000000,'
    b'"owned_by":"fake"}]}',
)
NOT_FOUND = _http(
    "404 Not Found",
    b"application/json",
    b'{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":null}}',
)
BAD_REQUEST = _http(
    "400 Bad Request",
    b"application/json",
    b'{"error":{"message":"bad request","type":"invalid_request_error","param":null,"code":null}}',
)


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("buf", "closing", "fake", "task", "transport")

    def __init__(self, fake: Fake) -> None:
        self.fake = fake
        self.buf = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.task is None:
            self._process()

    def _write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def _finish(self, close: bool) -> None:
        if close and self.transport is not None:
            self.closing = True
            self.transport.close()

    def _process(self) -> None:
        """Answer every complete request in the buffer, in order."""
        while not self.closing and self.task is None:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._write(BAD_REQUEST)
                    self._finish(True)
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                self._write(BAD_REQUEST)
                self._finish(True)
                return
            length = 0
            chunked = False
            close = version == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    v = value.strip().lower()
                    close = v == b"close" or (close and v != b"keep-alive")
            start = end + 4
            if chunked:
                parsed = _dechunk(buf, start)
                if parsed is None:
                    return
                body, consumed = parsed
            else:
                if length > MAX_BODY:
                    self._write(BAD_REQUEST)
                    self._finish(True)
                    return
                if len(buf) < start + length:
                    return
                body = bytes(buf[start : start + length])
                consumed = start + length
            del buf[:consumed]
            self._handle(method, target, body, close)

    def _handle(self, method: bytes, target: bytes, body: bytes, close: bool) -> None:
        path, _, query = target.partition(b"?")
        fake = self.fake
        openai = path.endswith(b"/chat/completions")
        if method == b"POST" and (openai or path.endswith(b"/messages")):
            fake.requests += 1
            try:
                obj = orjson.loads(body)
                model = str(obj.get("model") or "bench")
            except (orjson.JSONDecodeError, AttributeError):
                self._write(BAD_REQUEST)
                self._finish(close)
                return
            b = fake.behaviour(model, query)
            stream = obj.get("stream") is True
            if stream:
                if openai:
                    opts = obj.get("stream_options")
                    usage = isinstance(opts, dict) and opts.get("include_usage") is True
                    events = fake.stream(model, b.chunks, usage)
                else:
                    events = fake.message_stream(model, b.chunks)
                if b.delay_ms <= 0 and b.chunk_delay_ms <= 0 and b.hold_s <= 0:
                    self._write(SSE_HEAD + b"".join(events) + CHUNKED_END)
                    self._finish(close)
                    return
                self.task = asyncio.ensure_future(self._stream(b, events, close))
                return
            answer = fake.completion(model) if openai else fake.message(model)
            if b.delay_ms <= 0:
                self._write(answer)
                self._finish(close)
                return
            self.task = asyncio.ensure_future(self._delayed(b, answer, close))
            return
        if method == b"GET" and path in (b"/health", b"/v1/models", b"/models", b"/"):
            self._write(MODELS if path.endswith(b"models") else OK_JSON)
        else:
            self._write(NOT_FOUND)
        self._finish(close)

    def _done(self, close: bool) -> None:
        self.task = None
        self._finish(close)
        if self.buf:
            self._process()

    async def _delayed(self, b: Behaviour, data: bytes, close: bool) -> None:
        await sleep_precise(b.delay_ms / 1000)
        self._write(data)
        self._done(close)

    async def _stream(self, b: Behaviour, events: list[bytes], close: bool) -> None:
        fake = self.fake
        fake.open_streams += 1
        try:
            if b.delay_ms > 0:
                await sleep_precise(b.delay_ms / 1000)
            self._write(SSE_HEAD + events[0])
            if b.hold_s > 0:
                await asyncio.sleep(b.hold_s)
            gap = b.chunk_delay_ms / 1000
            if gap > 0:
                for e in events[1:]:
                    await asyncio.sleep(gap)
                    self._write(e)
                self._write(CHUNKED_END)
            else:
                self._write(b"".join(events[1:]) + CHUNKED_END)
        finally:
            fake.open_streams -= 1
        self._done(close)


async def sleep_precise(seconds: float) -> None:
    """Sleep to within a few µs: event-loop timers have 1 ms granularity (libuv), which
    would add up to a millisecond of noise to every delayed answer; the last 2 ms are
    spent yielding to the loop (other connections are served meanwhile)."""
    due = time.perf_counter() + seconds
    if seconds > 0.004:
        await asyncio.sleep(seconds - 0.002)
    while time.perf_counter() < due:  # noqa: ASYNC110 - a deliberate, bounded spin
        await asyncio.sleep(0)


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """A chunked body starting at ``pos``: (body, end) or None while incomplete."""
    parts = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


async def serve(host: str, port: int, defaults: Behaviour, exit_after: float) -> None:
    fake = Fake(defaults)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(fake), host, port, backlog=4096, reuse_address=True
    )
    print(f"fake upstream ready on http://{host}:{port} (pid {os.getpid()})", file=sys.stderr)
    sys.stderr.flush()
    async with server:
        await asyncio.sleep(exit_after)  # bounded: exits by itself


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay before each answer")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between chunks")
    p.add_argument("--hold-s", type=float, default=0.0, help="stream: hold open after chunk 1")
    p.add_argument("--chunks", type=int, default=20, help="chunks per streamed answer")
    p.add_argument("--exit-after", type=float, default=3600.0, help="exit after this many s")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the fake only listens on loopback")
    defaults = Behaviour(
        delay_ms=args.delay_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        hold_s=min(args.hold_s, MAX_HOLD_S),
        chunks=max(2, args.chunks),
    )
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, defaults, args.exit_after))
    except ImportError:
        asyncio.run(serve(args.host, args.port, defaults, args.exit_after))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
