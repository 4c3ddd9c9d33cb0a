"""The SSE relay, fed golden transcripts split at awkward byte boundaries."""

from __future__ import annotations

import orjson
import pytest

from qiao.providers.openai_stream import OpenAIStreamRelay

HEAD = b'"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m"'


def chunk(delta: bytes, finish: bytes = b"null", usage: bool = True) -> bytes:
    extra = b',"usage":null' if usage else b""
    return (
        b"data: {"
        + HEAD
        + b',"choices":[{"index":0,"delta":'
        + delta
        + b',"logprobs":null,"finish_reason":'
        + finish
        + b"}]"
        + extra
        + b"}\n\n"
    )


USAGE = b'{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}'
TRANSCRIPT = (
    chunk(b'{"role":"assistant","content":""}')
    + chunk(b'{"content":"Hel"}')
    + chunk(b'{"content":"lo \\u4e2d\\u6587 \\"q\\""}')
    + chunk(b"{}", b'"stop"')
    + b"data: {"
    + HEAD
    + b',"choices":[],"usage":'
    + USAGE
    + b"}\n\n"
    + b"data: [DONE]\n\n"
)


def run(relay: OpenAIStreamRelay, data: bytes, cuts: list[int]) -> bytes:
    out = b""
    prev = 0
    for cut in [*cuts, len(data)]:
        out += relay.feed(data[prev:cut])
        prev = cut
    return out


def events(out: bytes) -> list[bytes]:
    return [e for e in out.split(b"\n\n") if e]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 13, 64, 10_000])
def test_client_asked_usage_relays_bytes_unchanged(step: int) -> None:
    relay = OpenAIStreamRelay(strip_usage=False)
    out = run(relay, TRANSCRIPT, list(range(step, len(TRANSCRIPT), step)))
    assert out == TRANSCRIPT
    assert relay.done and relay.failed is None
    assert relay.usage == orjson.loads(USAGE)


@pytest.mark.parametrize("step", [1, 5, 11, 10_000])
def test_usage_chunk_and_nulls_removed_when_client_did_not_ask(step: int) -> None:
    relay = OpenAIStreamRelay(strip_usage=True)
    out = run(relay, TRANSCRIPT, list(range(step, len(TRANSCRIPT), step)))
    evs = events(out)
    assert evs[-1] == b"data: [DONE]"
    payloads = [orjson.loads(e[6:]) for e in evs[:-1]]
    assert len(payloads) == 4
    assert all("usage" not in p for p in payloads)
    assert (
        "".join(p["choices"][0]["delta"].get("content", "") for p in payloads) == 'Hello 中文 "q"'
    )
    assert relay.usage == orjson.loads(USAGE)


def test_crlf_separators() -> None:
    data = TRANSCRIPT.replace(b"\n\n", b"\r\n\r\n")
    relay = OpenAIStreamRelay(strip_usage=False)
    assert run(relay, data, [5, 100, 101]) == data
    assert relay.done


def test_missing_done_is_noticed() -> None:
    relay = OpenAIStreamRelay(strip_usage=False)
    data = TRANSCRIPT.replace(b"data: [DONE]\n\n", b"")
    run(relay, data, [50])
    assert not relay.done


def test_malformed_event_stops_relay() -> None:
    relay = OpenAIStreamRelay(strip_usage=False)
    data = chunk(b'{"content":"a"}') + b"data: {not json\n\n" + chunk(b'{"content":"b"}')
    out = run(relay, data, [3])
    assert relay.failed
    assert b'"b"' not in out
    err = relay.error_event(relay.failed, "upstream_protocol_error")
    assert orjson.loads(err[6:])["error"]["code"] == "upstream_protocol_error"


def test_comments_and_upstream_error_events_pass() -> None:
    relay = OpenAIStreamRelay(strip_usage=True)
    data = b": keep-alive\n\n" + b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    out = relay.feed(data)
    assert out == data
    assert relay.error


def test_incomplete_event_is_held_back() -> None:
    relay = OpenAIStreamRelay(strip_usage=False)
    assert relay.feed(b'data: {"a":') == b""
    assert relay.feed(b"1}\n\n") == b'data: {"a":1}\n\n'


def test_responses_stream_terminal_and_usage() -> None:
    relay = OpenAIStreamRelay(strip_usage=True, responses=True)
    created = b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{}}\n\n'
    done = (
        b'event: response.completed\ndata: {"type":"response.completed","sequence_number":1,'
        b'"response":{"usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}}\n\n'
    )
    out = run(relay, created + done, [10, 80])
    assert out == created + done
    assert relay.done and relay.usage == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    err = orjson.loads(relay.error_event("x", "y").split(b"data: ")[1])
    assert err["sequence_number"] == 2 and err["type"] == "error"
