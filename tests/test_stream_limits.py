"""A passthrough stream holds at most one bounded event: an upstream that never ends its
event (no blank line) gets an error event at the limit, not a buffer that grows forever."""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator

import orjson
import pytest
from aiohttp import web
from fakes.cloud import Loopback
from gateway import Gateway

from qiao.providers.openai_stream import MAX_EVENT_BYTES

KEY = "sk-qiao-stream-limit-key-0123456789"
START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 0},
    },
}


class EndlessEvent(Loopback):
    """An Anthropic upstream whose second event never ends: 1 MiB writes of one data line
    until the limit is passed, then the connection is held open until the gateway hangs up
    (the gateway must not wait for the rest)."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._handle)
        super().__init__(app)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"event: message_start\ndata: " + orjson.dumps(START) + b"\n\n")
        await resp.write(b'event: content_block_delta\ndata: {"x": "')
        chunk, sent = b"y" * (1024 * 1024), 0
        while sent <= MAX_EVENT_BYTES + len(chunk):
            await resp.write(chunk)
            sent += len(chunk)
        async with asyncio.timeout(120):  # a ceiling: the test's client gives up at 60 s
            while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110 - no event announces a peer hang-up
                await asyncio.sleep(0.05)
        return resp


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with EndlessEvent() as up:
        config = f"""
providers:
  a:
    type: anthropic
    base_url: "http://127.0.0.1:{up.port}"
    api_key: sk-ant-upstream-0123456789
    timeouts: {{idle: 120, total: 300}}
models: {{claude-x: [{{provider: a}}]}}
keys: [{{name: k, key: {KEY}}}]
"""
        with Gateway(config) as g:
            yield g


def test_an_event_that_never_ends_is_cut_at_the_limit(gw: Gateway) -> None:
    body = {
        "model": "claude-x",
        "max_tokens": 5,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    # The idle and total timeouts are minutes away: only the size limit can end this stream
    # within the client's 60 s read timeout (before the fix it held the bytes and waited).
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
    conn.request(
        "POST",
        "/v1/messages",
        body=orjson.dumps(body),
        headers={
            "x-api-key": KEY,
            "anthropic-version": "2023-06-01",
            "Content-Type": "application/json",
        },
    )
    resp = conn.getresponse()
    assert resp.status == 200
    text = resp.read().decode()
    conn.close()
    head = text[:2000]  # what an assertion shows: never the megabytes
    assert len(text) < 100_000, f"{len(text)} bytes relayed: {head}"  # not the unfinished event
    assert text.startswith("event: message_start"), head
    assert "event: error" in text and "larger than the limit" in text, head
