"""Self-test of tests/fakes/openai_upstream.py against the official openai SDK."""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Iterator

import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, Fault, embedding_vector
from openai import AzureOpenAI, OpenAI

KEY = "sk-fake-abcdef0123456789wxyz"
WEATHER = {
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


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> OpenAI:
    return OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=5)


def _raw_post(fake: FakeOpenAI, path: str, body: dict[str, object]) -> bytes:
    req = urllib.request.Request(
        fake.url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return bytes(resp.read())


def test_chat_non_stream_and_recording(fake: FakeOpenAI, client: OpenAI) -> None:
    out = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "hi there"},
        ],
    )
    assert out.choices[0].message.content == "echo: hi there"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (4, 3)
    rec = fake.requests_for("/v1/chat/completions")[-1]
    assert rec.method == "POST" and rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.json["messages"][1]["content"] == "hi there" and b"hi there" in rec.body


def test_chat_n2_and_length(client: OpenAI) -> None:
    out = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a b c d"}], n=2
    )
    assert [c.message.content for c in out.choices] == ["echo: a b c d", "echo: a b c d (1)"]
    short = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2
    )
    assert short.choices[0].message.content == "echo: a"
    assert short.choices[0].finish_reason == "length"


def test_chat_stream_tools_accumulator(client: OpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert final.choices[0].finish_reason == "tool_calls"


def test_chat_stream_include_usage(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
            n=2,
        )
    )
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 3
    text0 = "".join(
        c.choices[0].delta.content or "" for c in chunks[:-1] if c.choices[0].index == 0
    )
    assert text0 == "echo: one two three"


def test_chat_stream_raw_done(fake: FakeOpenAI) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    raw = _raw_post(fake, "/v1/chat/completions", body)
    assert raw.endswith(b"data: [DONE]\n\n") and b'"usage"' not in raw


def test_completions(client: OpenAI) -> None:
    out = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert out.choices[0].text == "echo: Say hi" and out.usage.prompt_tokens == 2  # type: ignore[union-attr]
    stream = client.completions.create(model="m", prompt=["a", "b"], stream=True)
    texts = {0: "", 1: ""}
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] += c.text
    assert texts == {0: "echo: a", 1: "echo: b"}


def test_embeddings_float_and_base64(fake: FakeOpenAI, client: OpenAI) -> None:
    b64 = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert fake.last_request.json["encoding_format"] == "base64"
    assert [d.embedding for d in b64.data] == [embedding_vector("a"), embedding_vector("b")]
    flt = client.embeddings.create(model="e", input="a", encoding_format="float", dimensions=4)
    assert flt.data[0].embedding == embedding_vector("a", 4)
    tok = client.embeddings.create(model="e", input=[[1, 2], [3]], encoding_format="float")
    assert len(tok.data) == 2 and tok.usage.prompt_tokens == 3


def test_responses_non_stream_and_stream(client: OpenAI) -> None:
    resp = client.responses.create(model="gpt-4.1-mini", input="hello you", instructions="be brief")
    assert resp.output_text == "echo: hello you" and resp.usage is not None
    assert resp.usage.input_tokens == 4
    tool = {
        "type": "function",
        "name": "get_weather",
        "parameters": WEATHER["function"]["parameters"],
    }  # type: ignore[index]
    with client.responses.stream(
        model="gpt-4.1-mini",
        input=[{"role": "user", "content": "Rome"}],
        tools=[tool],  # type: ignore[list-item]
    ) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.output_text == "echo: Rome"
    call = final.output[1]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Rome"}


def test_models(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "deepseek-ai/DeepSeek-V4-Flash" in ids
    assert (
        client.models.retrieve("deepseek-ai/DeepSeek-V4-Flash").id
        == "deepseek-ai/DeepSeek-V4-Flash"
    )
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_azure(fake: FakeOpenAI) -> None:
    az = AzureOpenAI(api_key=KEY, api_version="2024-10-21", azure_endpoint=fake.url, max_retries=0)
    out = az.chat.completions.create(model="dep1", messages=[{"role": "user", "content": "az"}])
    assert out.choices[0].message.content == "echo: az" and out.model == "dep1"
    rec = fake.last_request
    assert rec.path == "/openai/deployments/dep1/chat/completions"
    assert "api-version=2024-10-21" in rec.query_string and rec.headers["api-key"] == KEY
    assert len(az.embeddings.create(model="dep1", input="x").data[0].embedding) == 8
    bad = AzureOpenAI(api_key="nope", api_version="v", azure_endpoint=fake.url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="dep1", input="x")


def test_401_echoes_key_fragment(fake: FakeOpenAI) -> None:
    bad = OpenAI(api_key="sk-abcdefghijklmnwxyz", base_url=fake.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.models.list()
    assert err.value.code == "invalid_api_key"
    assert "Incorrect API key provided: sk-abc***wxyz." in err.value.message
    fake.set_fault("m-echo", Fault("error_echo_key", times=1))
    good = OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err2:
        good.chat.completions.create(model="m-echo", messages=[{"role": "user", "content": "x"}])
    assert "sk-fak***wxyz" in err2.value.message


def test_fault_status_503(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.set_fault("m-503", Fault("status", status=503, retry_after=7, times=1))
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="m-503", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "7"
    assert err.value.code == "server_is_overloaded"
    out = client.chat.completions.create(model="m-503", messages=[{"role": "user", "content": "x"}])
    assert out.choices[0].message.content == "echo: x"  # one-shot fault consumed


def test_fault_stall_mid_stream_cancels_upstream(fake: FakeOpenAI) -> None:
    fake.set_fault("m-stall", Fault("stall_mid_stream", after_chunks=2, delay=5))
    slow = OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=0.5)
    before = fake.cancelled
    got = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in slow.chat.completions.create(
            model="m-stall", messages=[{"role": "user", "content": "a b c"}], stream=True
        ):
            got.append(chunk)
    assert len(got) == 2
    assert fake.wait_until(lambda: fake.cancelled > before and fake.active == 0, timeout=3)
    fake.clear_faults()


def test_fault_missing_done_and_malformed(fake: FakeOpenAI) -> None:
    body = {"model": "m-nodone", "messages": [{"role": "user", "content": "x"}], "stream": True}
    fake.set_fault("m-nodone", Fault("missing_done"))
    raw = _raw_post(fake, "/v1/chat/completions", body)
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' in raw
    fake.set_fault("m-bad", Fault("malformed_chunk", after_chunks=1))
    raw = _raw_post(fake, "/v1/chat/completions", body | {"model": "m-bad"})
    assert raw.split(b"\n\n")[1] == b"data: {not json" and raw.endswith(b"data: [DONE]\n\n")


def test_fault_mid_stream_error(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.set_fault("m-err", Fault("mid_stream_error", after_chunks=1))
    with pytest.raises(openai.APIError, match="server had an error"):
        list(
            client.chat.completions.create(
                model="m-err", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )


def test_fault_reset_mid_stream(fake: FakeOpenAI, client: OpenAI) -> None:
    fake.set_fault("m-reset", Fault("reset_mid_stream", after_chunks=1))
    before = fake.cancelled
    with pytest.raises(openai.APIConnectionError):
        list(
            client.chat.completions.create(
                model="m-reset", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    with pytest.raises(http.client.IncompleteRead):  # non-stream: half a body, then RST
        _raw_post(fake, "/v1/embeddings", {"model": "m-reset", "input": "x"})
    assert fake.wait_until(lambda: fake.active == 0, timeout=3) and fake.cancelled == before


def test_fault_slow_stream_and_stall_before_first_byte(fake: FakeOpenAI) -> None:
    fake.set_fault("m-slow", Fault("slow_stream", delay=0.3))
    slow = OpenAI(api_key=KEY, base_url=fake.base_url, max_retries=0, timeout=0.15)
    with pytest.raises(openai.APITimeoutError):
        list(
            slow.chat.completions.create(
                model="m-slow", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )
    assert fake.wait_until(lambda: fake.active == 0)  # the first cancellation has been counted
    fake.set_fault("m-ttfb", Fault("stall_before_first_byte", delay=0.3, times=1))
    before = fake.cancelled
    with pytest.raises(openai.APITimeoutError):
        slow.chat.completions.create(model="m-ttfb", messages=[{"role": "user", "content": "x"}])
    assert fake.wait_until(lambda: fake.cancelled == before + 1)


def test_fake_openai_misc(fake: FakeOpenAI, client: OpenAI) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("nope")  # type: ignore[arg-type]
    fake.set_fault("*", Fault("status", status=429, times=1))
    with pytest.raises(openai.RateLimitError) as err:
        client.models.list()
    assert err.value.code == "rate_limit_exceeded"
    assert len(client.models.list().data) == 3
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        client.get("/nope", cast_to=object)
    empty = client.chat.completions.create(model="m", messages=[{"role": "system", "content": "s"}])
    assert empty.choices[0].message.content == "echo:"
