"""OpenAI surface → OpenAI-type upstream: the passthrough path, over real sockets.

The official openai SDK is the client; the upstream is a fake that speaks
OpenAI's exact wire format (tests/fakes/openai_upstream.py).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import openai
import orjson
import pytest
from conftest import CLIENT_KEY
from fakes.openai_upstream import FakeOpenAI, Fault
from gateway import Gateway

UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
AZURE_KEY = "azure-upstream-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=UPSTREAM_KEY, azure_api_key=AZURE_KEY) as f:
        yield f


@pytest.fixture(scope="module")
def gw(fake: FakeOpenAI) -> Iterator[Gateway]:
    dead = _free_port()
    config = f"""
providers:
  up:
    type: openai
    base_url: {fake.base_url}
    api_key: {UPSTREAM_KEY}
    timeouts: {{connect: 1, first_byte: 1.5, idle: 0.7, total: 4}}
  dead:
    type: openai
    base_url: http://127.0.0.1:{dead}/v1
    api_key: sk-dead-upstream-key
    timeouts: {{connect: 1}}
  az:
    type: azure
    base_url: {fake.url}
    api_version: "2024-10-21"
    api_key: {AZURE_KEY}
  one:
    type: groq
    base_url: {fake.base_url}
    api_key: {UPSTREAM_KEY}
models:
  gpt-4o-mini: [{{provider: up}}]
  renamed: [{{provider: up, model: gpt-4o-mini}}]
  fallback: [{{provider: dead, model: gpt-4o-mini}}, {{provider: up, model: gpt-4o-mini}}]
  flaky: [{{provider: up, model: flaky-a}}, {{provider: up, model: gpt-4o-mini}}]
  az-chat: [{{provider: az, model: my-deployment}}]
  groq-model: [{{provider: one, model: gpt-4o-mini}}]
  "up-*": [{{provider: up}}]
keys:
  - {{name: tester, key: {CLIENT_KEY}}}
"""
    with Gateway(config) as g:
        yield g


@pytest.fixture(autouse=True)
def _clean(fake: FakeOpenAI) -> Iterator[None]:
    fake.reset()
    yield
    fake.clear_faults()


def client(gw: Gateway, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=10, **kw)


MSG = [{"role": "user", "content": "Paris"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "w",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


# ------------------------------------------------------------------ happy paths


def test_chat_non_stream_tools_n2(gw: Gateway, fake: FakeOpenAI) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MSG, tools=TOOLS, n=2
    )
    r = raw.parse()
    assert len(r.choices) == 2
    assert r.choices[1].message.tool_calls[0].function.arguments == '{"city":"Paris"}'
    assert raw.headers["x-qiao-provider"] == "up"
    assert raw.headers["x-qiao-upstream-request-id"]
    assert float(raw.headers["x-qiao-overhead-ms"]) < 1000


def test_body_is_byte_faithful_when_nothing_changes(gw: Gateway, fake: FakeOpenAI) -> None:
    body = (
        b'{"model":"gpt-4o-mini", "messages":[{"role":"user","content":"Paris"}],'
        b' "temperature":0.20, "vendor_extra":{"keep":[1,2.50,"\\u4e2d"]}}'
    )
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={
            "Authorization": f"Bearer {CLIENT_KEY}",
            "Content-Type": "application/json",
            "Connection": "keep-alive",
            "Proxy-Authorization": "Basic eHh4",
            "OpenAI-Beta": "x=1",
            "Cookie": "session=abc",
            "X-Forwarded-For": "1.2.3.4",
        },
    )
    resp = conn.getresponse()
    assert resp.status == 200
    upstream = resp.read()
    sent = fake.last_request
    assert sent.body == body
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent.headers["OpenAI-Beta"] == "x=1"
    for h in ("Proxy-Authorization", "Cookie", "X-Forwarded-For", "x-api-key"):
        assert h not in sent.headers
    assert CLIENT_KEY not in str(dict(sent.headers))
    assert orjson.loads(upstream)["choices"][0]["message"]["content"] == "echo: Paris"


# Body fields that relays built on one-api/new-api/LiteLLM may honour (issue 8, item 8).
STEERING = (
    "headers",
    "litellm_params",
    "user_config",
    "azure_endpoint",
    "endpoint",
    "url",
    "proxy",
    "extra_headers",
    "custom_llm_provider",
)


def test_model_rename_keeps_other_fields(gw: Gateway, fake: FakeOpenAI) -> None:
    client(gw).chat.completions.create(
        model="renamed",
        messages=MSG,
        extra_body={
            "top_k": 5,
            "reasoning_split": True,
            "api_base": "http://169.254.169.254/",
            "base_url": "http://evil",
            "api_key": "x",
            **{name: "http://127.0.0.1:1/evil" for name in STEERING},
        },
        extra_headers={"X-Api-Base": "http://evil"},
    )
    sent = fake.last_request
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["top_k"] == 5 and sent.json["reasoning_split"] is True
    for routing in ("api_base", "base_url", "api_key", *STEERING):
        assert routing not in sent.json
    assert sent.path == "/v1/chat/completions"
    assert "X-Api-Base" not in sent.headers


def test_stream_tools_with_usage(gw: Gateway, fake: FakeOpenAI) -> None:
    with client(gw).chat.completions.stream(
        model="gpt-4o-mini", messages=MSG, tools=TOOLS, stream_options={"include_usage": True}
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"city":"Paris"}'
    usage_chunks = [e for e in events if e.type == "chunk" and e.chunk.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].chunk.choices == []


def test_stream_without_usage_strips_it_but_logs_it(gw: Gateway, fake: FakeOpenAI) -> None:
    chunks = list(
        client(gw).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True)
    )
    assert fake.last_request.json["stream_options"] == {"include_usage": True}
    assert all(c.choices and c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: Paris"
    record = gw.log.last()
    assert record["usage"]["input_tokens"] == 1 and record["status"] == 200
    assert "ttfb_ms" in record


def test_stream_n2_interleaved(gw: Gateway, fake: FakeOpenAI) -> None:
    chunks = list(
        client(gw).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True, n=2)
    )
    texts = {0: "", 1: ""}
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    assert texts == {0: "echo: Paris", 1: "echo: Paris (1)"}


def test_completions_stream_and_not(gw: Gateway, fake: FakeOpenAI) -> None:
    c = client(gw)
    assert c.completions.create(model="gpt-4o-mini", prompt="Say").choices[0].text == "echo: Say"
    text = "".join(
        ch.choices[0].text
        for ch in c.completions.create(model="gpt-4o-mini", prompt="Say", stream=True)
        if ch.choices
    )
    assert text == "echo: Say"


def test_embeddings_float_and_base64(gw: Gateway, fake: FakeOpenAI) -> None:
    c = client(gw)
    as_b64 = c.embeddings.create(model="gpt-4o-mini", input=["a", "b"])
    assert fake.last_request.json["encoding_format"] == "base64"
    as_float = c.embeddings.create(model="gpt-4o-mini", input=["a", "b"], encoding_format="float")
    assert [d.embedding for d in as_b64.data] == [d.embedding for d in as_float.data]
    assert len(as_float.data[0].embedding) == 8
    tokens = c.embeddings.create(model="gpt-4o-mini", input=[[1, 2, 3]], encoding_format="float")
    assert len(tokens.data) == 1


def test_responses_stream_and_not(gw: Gateway, fake: FakeOpenAI) -> None:
    c = client(gw)
    r = c.responses.create(model="gpt-4o-mini", input="Paris", instructions="brief")
    assert r.output_text == "echo: Paris"
    with c.responses.stream(
        model="gpt-4o-mini",
        input="Paris",
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "parameters": TOOLS[0]["function"]["parameters"],
                "strict": False,
            }
        ],
    ) as s:
        final = s.get_final_response()
    assert any(o.type == "function_call" for o in final.output)
    assert gw.log.last()["usage"]["output_tokens"] > 0


def test_pattern_alias_and_provider_prefix(gw: Gateway, fake: FakeOpenAI) -> None:
    client(gw).chat.completions.create(model="up-anything", messages=MSG)
    assert fake.last_request.json["model"] == "up-anything"
    client(gw).chat.completions.create(model="up/raw-name", messages=MSG)
    assert fake.last_request.json["model"] == "raw-name"


def test_azure_provider_and_azure_client(gw: Gateway, fake: FakeOpenAI) -> None:
    az = openai.AzureOpenAI(
        api_key=CLIENT_KEY, api_version="2024-10-21", azure_endpoint=gw.url, max_retries=0
    )
    r = az.chat.completions.create(model="az-chat", messages=MSG)
    assert r.choices[0].message.content == "echo: Paris"
    sent = fake.last_request
    assert sent.path == "/openai/deployments/my-deployment/chat/completions"
    assert "api-version=2024-10-21" in sent.query_string
    assert sent.headers["api-key"] == AZURE_KEY and "Authorization" not in sent.headers
    emb = az.embeddings.create(model="az-chat", input="x", encoding_format="float")
    assert len(emb.data[0].embedding) == 8


def test_preset_limits_checked_before_sending(gw: Gateway, fake: FakeOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client(gw).chat.completions.create(model="groq-model", messages=MSG, n=2)
    assert exc.value.param == "n"
    assert fake.requests == []


# ------------------------------------------------------------------ errors


def test_upstream_401_never_echoes_a_key(gw: Gateway, fake: FakeOpenAI) -> None:
    fake.set_fault("gpt-4o-mini", Fault("error_echo_key"))
    with pytest.raises(openai.InternalServerError) as exc:
        client(gw).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert exc.value.status_code == 502
    text = str(exc.value.body) + exc.value.message
    assert "sk-ups" not in text and "cdef" not in text and "***" not in text
    assert UPSTREAM_KEY[:6] not in gw.log.text


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [
        (Fault("status", status=429, retry_after=7), 429, "7"),
        (Fault("status", status=500), 502, None),
        (Fault("status", status=503, retry_after=3), 503, "3"),
        (Fault("status", status=400), 400, None),
        (Fault("stall_before_first_byte", delay=3), 504, None),
    ],
)
def test_upstream_failures_map_to_honest_statuses(
    gw: Gateway, fake: FakeOpenAI, fault: Fault, status: int, retry_after: str | None
) -> None:
    fake.set_fault("gpt-4o-mini", fault)
    with pytest.raises(openai.APIStatusError) as exc:
        client(gw).chat.completions.create(model="gpt-4o-mini", messages=MSG)
    assert exc.value.status_code == status
    assert exc.value.response.headers.get("retry-after") == retry_after
    assert exc.value.response.headers["x-qiao-provider"] == "up"
    assert isinstance(exc.value.body, dict) and exc.value.body.get("message")


def test_connect_failure_is_502(gw: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client(gw).chat.completions.create(model="dead/gpt-4o-mini", messages=MSG)
    assert exc.value.status_code == 502 and exc.value.code == "upstream_connect_error"


def test_fallback_to_next_target(gw: Gateway, fake: FakeOpenAI) -> None:
    r = client(gw).chat.completions.create(model="fallback", messages=MSG)
    assert r.choices[0].message.content == "echo: Paris"
    assert gw.log.last()["attempts"] == 2
    fake.set_fault("flaky-a", Fault("status", status=503))
    r = client(gw).chat.completions.create(model="flaky", messages=MSG)
    assert r.choices[0].message.content == "echo: Paris"


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault("stall_mid_stream", after_chunks=2, delay=3), "upstream_timeout"),
        (Fault("reset_mid_stream", after_chunks=2), "upstream_protocol_error"),
        (Fault("malformed_chunk", after_chunks=2), "upstream_protocol_error"),
        (Fault("missing_done"), "upstream_truncated"),
    ],
)
def test_broken_streams_end_with_an_error_event(
    gw: Gateway, fake: FakeOpenAI, fault: Fault, code: str
) -> None:
    fake.set_fault("gpt-4o-mini", fault)
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for ch in client(gw).chat.completions.create(
            model="gpt-4o-mini", messages=MSG, stream=True
        ):
            got.extend(c.delta.content or "" for c in ch.choices)
    assert exc.value.code == code
    assert got  # the chunks before the fault did arrive


def test_mid_stream_upstream_error_is_relayed(gw: Gateway, fake: FakeOpenAI) -> None:
    fake.set_fault("gpt-4o-mini", Fault("mid_stream_error", after_chunks=1))
    before = len(gw.log.lines)
    with pytest.raises(openai.APIError):
        list(client(gw).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True))
    assert gw.log.wait_until(lambda r: r.get("error") == "upstream_stream_error", before)


def test_total_timeout_ends_a_slow_stream(gw: Gateway, fake: FakeOpenAI) -> None:
    fake.set_fault(
        "gpt-4o-mini", Fault("slow_stream", delay=0.5)
    )  # 0.5 s < idle, 10 chunks > total
    t0 = time.monotonic()
    with pytest.raises(openai.APIError) as exc:
        list(
            client(gw).chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "a b c d e f g h i j"}],
                stream=True,
            )
        )
    assert exc.value.code == "upstream_timeout"
    assert time.monotonic() - t0 < 6


def test_client_disconnect_cancels_upstream(gw: Gateway, fake: FakeOpenAI) -> None:
    fake.set_fault("gpt-4o-mini", Fault("stall_mid_stream", after_chunks=1, delay=30))
    stream = client(gw).chat.completions.create(model="gpt-4o-mini", messages=MSG, stream=True)
    next(iter(stream))
    assert fake.active == 1
    stream.close()
    t0 = time.monotonic()
    assert fake.wait_until(lambda: fake.cancelled >= 1 and fake.active == 0, timeout=1.0)
    assert time.monotonic() - t0 < 1.0


def test_client_disconnect_before_headers_cancels_upstream(gw: Gateway, fake: FakeOpenAI) -> None:
    fake.set_fault("gpt-4o-mini", Fault("stall_before_first_byte", delay=1.4))
    s = socket.create_connection(("127.0.0.1", gw.port))
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": MSG})
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert fake.wait_until(lambda: fake.active == 1, timeout=2)
    s.close()
    assert fake.wait_until(lambda: fake.cancelled >= 1, timeout=1.0)
