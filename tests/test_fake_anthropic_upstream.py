"""Self-test of tests/fakes/anthropic_upstream.py against the official anthropic SDK."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic import Anthropic
from fakes.anthropic_upstream import FakeAnthropic, Fault, signature_for

KEY = "sk-ant-fake-abcdef0123456789wxyz"
WEATHER = {
    "name": "get_weather",
    "description": "w",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
HI = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeAnthropic) -> Iterator[None]:
    yield
    fake.clear_faults()


@pytest.fixture
def client(fake: FakeAnthropic) -> Anthropic:
    return Anthropic(api_key=KEY, base_url=fake.url, max_retries=0, timeout=5)


def _raw_post(
    fake: FakeAnthropic, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    hdrs = {"x-api-key": KEY, "anthropic-version": "2023-06-01"} | (headers or {})
    req = urllib.request.Request(
        fake.url + path,
        data=json.dumps(body).encode(),
        headers=hdrs | {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _events(raw: bytes) -> list[str]:
    return [f.split(b"\n")[0].removeprefix(b"event: ").decode() for f in raw.split(b"\n\n") if f]


def test_non_stream_text_and_recording(fake: FakeAnthropic, client: Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, system="be nice", messages=HI
    )
    msg = raw.parse()
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "echo: hi there"  # type: ignore[union-attr]
    assert (msg.stop_reason, msg.stop_sequence) == ("end_turn", None)
    assert msg.model == "claude-sonnet-4-6"
    assert msg.id.startswith("msg_") and msg.role == "assistant"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 3)
    assert msg.usage.cache_read_input_tokens == 0
    assert raw.headers["request-id"].startswith("req_") and "x-request-id" not in raw.headers
    rec = fake.requests_for("/v1/messages")[-1]
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.headers["anthropic-version"] == "2026-10-21" and rec.json["system"] == "be nice"


def test_beta_query_and_header_recorded(fake: FakeAnthropic, client: Anthropic) -> None:
    msg = client.beta.messages.create(
        model="m", max_tokens=10, messages=HI, betas=["context-1m-2025-08-07", "x-1"],
        extra_query={"beta": "true"},
    )  # fmt: skip
    assert msg.content[0].text == "echo: hi there"  # type: ignore[union-attr]
    assert fake.last_request.query_string == "beta=true"
    assert fake.betas() == ["context-1m-2025-08-07", "x-1"]


def test_stop_sequence_and_max_tokens(client: Anthropic) -> None:
    words = [{"role": "user", "content": "a b END c d"}]
    out = client.messages.create(model="m", max_tokens=50, messages=words, stop_sequences=["END"])
    assert out.content[0].text == "echo: a b " and out.stop_reason == "stop_sequence"  # type: ignore[union-attr]
    assert out.stop_sequence == "END"
    short = client.messages.create(model="m", max_tokens=2, messages=words)
    assert short.content[0].text == "echo: a" and short.stop_reason == "max_tokens"  # type: ignore[union-attr]
    assert short.usage.output_tokens == 2


def test_stream_helper_tools_and_thinking(fake: FakeAnthropic, client: Anthropic) -> None:
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=2048,
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER],  # type: ignore[list-item]
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in types and "signature" in types and "thinking" in types
    assert fake.last_request.headers["x-stainless-helper-method"] == "stream"
    thinking, tool = final.content
    assert thinking.type == "thinking" and thinking.thinking == "Thinking about: Paris"
    assert thinking.signature == signature_for("Thinking about: Paris")
    assert tool.type == "tool_use" and tool.name == "get_weather" and tool.id.startswith("toolu_")
    assert tool.input == {"city": "Paris", "days": 1}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 4


def test_non_stream_thinking_and_tool_choice_none(client: Anthropic) -> None:
    out = client.messages.create(
        model="m", max_tokens=99, messages=HI, thinking={"type": "adaptive"},
        tools=[WEATHER], tool_choice={"type": "none"},  # type: ignore[list-item]
    )  # fmt: skip
    assert [b.type for b in out.content] == ["thinking", "text"]
    assert out.content[0].signature == signature_for("Thinking about: hi there")  # type: ignore[union-attr]
    assert out.stop_reason == "end_turn"


def test_raw_stream_iterator_event_sequence(fake: FakeAnthropic, client: Anthropic) -> None:
    events = list(
        client.messages.create(model="m", max_tokens=50, messages=HI, stream=True)  # type: ignore[call-overload]
    )
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[0].message.usage.input_tokens == 2
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "echo: hi there" and types.count("content_block_delta") == 3
    assert events[-2].usage.output_tokens == 3 and events[-2].delta.stop_reason == "end_turn"
    status, _, raw = _raw_post(
        fake, "/v1/messages", {"model": "m", "max_tokens": 9, "messages": HI, "stream": True}
    )
    assert status == 200 and b"event: ping\ndata: " in raw
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    tool_body = {"model": "m", "max_tokens": 9, "messages": HI, "tools": [WEATHER], "stream": True}
    raw = _raw_post(fake, "/v1/messages", tool_body)[2]
    frames = [json.loads(f.split(b"data: ")[1]) for f in raw.split(b"\n\n") if b"delta" in f]
    partial = [f["delta"]["partial_json"] for f in frames if f["type"] == "content_block_delta"]
    assert partial[0] == "" and len(partial) > 2
    assert json.loads("".join(partial)) == {"city": "hi there", "days": 1}


def test_count_tokens_and_models(client: Anthropic) -> None:
    count = client.messages.count_tokens(model="m", system="one two", messages=HI)
    assert count.input_tokens == 4
    models = client.models.list()
    assert [m.id for m in models.data] == [
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "claude-opus-4-8",
    ]
    assert models.has_more is False and models.first_id == "claude-sonnet-4-6"
    info = client.models.retrieve("claude-sonnet-4-6")
    assert info.display_name == "Claude Sonnet 4.6" and info.type == "model"
    page = client.models.list(limit=1, after_id="claude-sonnet-4-6")
    assert [m.id for m in page.data] == ["claude-haiku-4-5"] and page.has_more is True
    with pytest.raises(anthropic.NotFoundError, match="model: nope"):
        client.models.retrieve("nope")


def test_auth_errors_and_x_api_key(fake: FakeAnthropic) -> None:
    bad = Anthropic(api_key="sk-ant-wrong", base_url=fake.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        bad.messages.create(model="m", max_tokens=5, messages=HI)
    assert err.value.body["error"] == {
        "type": "authentication_error",
        "message": "invalid x-api-key",
    }  # type: ignore[index]
    assert err.value.request_id and err.value.body["request_id"] == err.value.request_id  # type: ignore[index]
    # x-api-key wins over Authorization: Bearer when both are present
    both = Anthropic(
        api_key="sk-ant-wrong", base_url=fake.url, max_retries=0, default_headers={"x-api-key": KEY}
    )
    assert (
        both.messages.create(model="m", max_tokens=5, messages=HI).content[0].text
        == "echo: hi there"
    )  # type: ignore[union-attr]
    status, headers, raw = _raw_post(
        fake, "/v1/messages", {"model": "m", "max_tokens": 5, "messages": HI}
    )
    assert status == 200 and json.loads(raw)["content"][0]["text"] == "echo: hi there"
    assert headers["request-id"].startswith("req_")
    status, _, raw = _raw_post(fake, "/v1/models", {}, {"x-api-key": ""})
    assert status == 401 and b"x-api-key header is required" in raw


def test_validation_errors(fake: FakeAnthropic, client: Anthropic) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": HI}
    status, _, raw = _raw_post(fake, "/v1/messages", body, {"anthropic-version": ""})
    assert (
        status == 400
        and json.loads(raw)["error"]["message"] == "anthropic-version: header is required"
    )
    for bad, message in [
        ({"max_tokens": None} | {"model": "m", "messages": HI}, "max_tokens: Input should be"),
        ({"model": "m", "messages": HI}, "max_tokens: Field required"),
        (body | {"messages": []}, "messages: at least one message"),
        (body | {"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ]:
        status, _, raw = _raw_post(fake, "/v1/messages", bad)
        err = json.loads(raw)
        assert status == 400 and err["type"] == "error" and message in err["error"]["message"]
    with pytest.raises(
        anthropic.BadRequestError, match="temperature: Extra inputs are not permitted"
    ):
        client.messages.create(
            model="m", max_tokens=5, messages=HI, extra_body={"temperature": 0.2}
        )
    old = client.with_options(default_headers={"anthropic-version": "2023-06-01"})
    assert old.messages.create(model="m", max_tokens=5, messages=HI, extra_body={"top_k": 3}).id
    msgs = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "s"},
        {"role": "user", "content": "b"},
    ]
    assert (
        client.messages.create(model="m", max_tokens=5, messages=msgs).content[0].text == "echo: b"
    )  # type: ignore[union-attr, arg-type]


def test_status_faults(fake: FakeAnthropic, client: Anthropic) -> None:
    fake.set_fault("m-busy", Fault("status", status=529, times=1))
    with pytest.raises(anthropic.OverloadedError) as err:
        client.messages.create(model="m-busy", max_tokens=5, messages=HI)
    assert err.value.status_code == 529 and err.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert client.messages.create(model="m-busy", max_tokens=5, messages=HI).id  # consumed
    fake.set_fault("*", Fault("status", status=429, times=1))
    with pytest.raises(anthropic.RateLimitError) as rl:
        client.models.list()
    assert rl.value.response.headers["retry-after"] == "1"
    fake.set_fault("m-500", Fault("status", status=500, retry_after=0))
    with pytest.raises(anthropic.InternalServerError, match="api_error"):
        client.messages.create(model="m-500", max_tokens=5, messages=HI)
    fake.set_fault("m-echo", Fault("error_echo_key", times=1))
    with pytest.raises(anthropic.AuthenticationError, match=r"sk-ant\*\*\*wxyz"):
        client.messages.create(model="m-echo", max_tokens=5, messages=HI)


def test_mid_stream_error_raises(fake: FakeAnthropic, client: Anthropic) -> None:
    fake.set_fault("m-err", Fault("mid_stream_error", after_chunks=2))
    got = []
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        for event in client.messages.create(model="m-err", max_tokens=5, messages=HI, stream=True):  # type: ignore[call-overload]
            got.append(event.type)
    assert got == ["message_start", "content_block_start"]
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        with client.messages.stream(model="m-err", max_tokens=5, messages=HI) as stream:
            stream.get_final_message()


def test_stream_faults(fake: FakeAnthropic, client: Anthropic) -> None:
    body = {"model": "m-nostop", "max_tokens": 9, "messages": HI, "stream": True}
    fake.set_fault("m-nostop", Fault("missing_done"))
    raw = _raw_post(fake, "/v1/messages", body)[2]
    assert _events(raw)[-1] == "message_delta" and b"message_stop" not in raw
    fake.set_fault("m-bad", Fault("malformed_chunk", after_chunks=1))
    raw = _raw_post(fake, "/v1/messages", body | {"model": "m-bad"})[2]
    assert raw.split(b"\n\n")[1] == b"event: content_block_delta\ndata: {not json"
    assert _events(raw)[-1] == "message_stop"
    fake.set_fault("m-reset", Fault("reset_mid_stream", after_chunks=1))
    with pytest.raises(httpx2.RemoteProtocolError):  # the SDK does not wrap mid-stream resets
        list(client.messages.create(model="m-reset", max_tokens=5, messages=HI, stream=True))  # type: ignore[call-overload]
    with pytest.raises(http.client.IncompleteRead):
        _raw_post(fake, "/v1/messages", body | {"model": "m-reset", "stream": False})
    fake.set_fault("m-stall", Fault("stall_mid_stream", after_chunks=3, delay=5))
    slow = client.with_options(timeout=0.3)
    before, got = fake.cancelled, []
    with pytest.raises(httpx2.ReadTimeout):  # also unwrapped mid-stream
        for event in slow.messages.create(model="m-stall", max_tokens=5, messages=HI, stream=True):  # type: ignore[call-overload]
            got.append(event.type)
    assert got == ["message_start", "content_block_start"]  # the ping is swallowed by the SDK
    assert fake.wait_until(lambda: fake.cancelled > before and fake.active == 0, timeout=3)
    fake.set_fault("m-ttfb", Fault("stall_before_first_byte", delay=0.5, times=1))
    with pytest.raises(anthropic.APITimeoutError):
        slow.messages.create(model="m-ttfb", max_tokens=5, messages=HI)
    fake.set_fault("m-slow", Fault("slow_stream", delay=0.05))
    assert (
        _events(_raw_post(fake, "/v1/messages", body | {"model": "m-slow"})[2])[-1]
        == "message_stop"
    )


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ([{"type": "bash_20250124", "name": "bash"}], "Input tag 'bash_20250124'"),
        ([{"name": "f"}], "tools.0.custom.input_schema: Field required"),
        ([WEATHER, WEATHER], "Tool names must be unique"),
        ([{"type": "web_search_20250305", "name": "search"}], "Input should be 'web_search'"),
    ],
)
def test_tools_are_checked(fake: FakeAnthropic, tools: list[Any], message: str) -> None:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": HI, "tools": tools}
    status, _, raw = _raw_post(fake, "/v1/messages", body)
    assert status == 400 and message in json.loads(raw)["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_web_search_server_tool(client: Anthropic, stream: bool) -> None:
    kw: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "search for news"}],
        "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}],
    }
    if stream:
        with client.messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**kw)
    kinds = [b.type for b in msg.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    assert msg.content[2].citations and msg.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert msg.usage.server_tool_use is not None
    assert msg.usage.server_tool_use.web_search_requests == 1


def test_the_named_tool_is_called(client: Anthropic) -> None:
    other = {**WEATHER, "name": "get_time"}
    msg = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        messages=[{"role": "user", "content": "use get_time"}],
        tools=[WEATHER, other],  # type: ignore[list-item]
    )
    assert msg.content[0].name == "get_time"  # type: ignore[union-attr]
