"""Self-test of tests/fakes/gemini_upstream.py against the official google-genai SDK."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from fakes.gemini_upstream import SKIP_SIGNATURE, FakeGemini, Fault
from fakes.openai_upstream import embedding_vector
from google import genai
from google.genai import errors, types

KEY = "AIza-fake-abcdef0123456789wxyz"
FLASH = "gemini-2.5-flash"
WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="w",
            parameters_json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        )
    ]
)
NO_AFC = types.AutomaticFunctionCallingConfig(disable=True)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake: FakeGemini) -> None:
    fake.reset()


def _client(fake: FakeGemini, version: str | None = "v1beta", key: str = KEY) -> genai.Client:
    opts = types.HttpOptions(base_url=fake.url, api_version=version, timeout=5000)
    return genai.Client(api_key=key, http_options=opts)


@pytest.fixture
def client(fake: FakeGemini) -> genai.Client:
    return _client(fake)


def _raw(fake: FakeGemini, path: str, body: Any = None, headers: dict[str, str] | None = None):
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"x-goog-api-key": KEY, "Content-Type": "application/json"} | (headers or {})
    req = urllib.request.Request(fake.url + path, data=data, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_generate_text_v1beta_and_v1(fake: FakeGemini, client: genai.Client) -> None:
    config = types.GenerateContentConfig(system_instruction="be nice")
    out = client.models.generate_content(model=FLASH, contents="hi there", config=config)
    assert out.text == "echo: hi there"
    assert out.candidates and out.candidates[0].finish_reason == types.FinishReason.STOP
    usage = out.usage_metadata
    assert usage and usage.prompt_token_count == 4 and usage.candidates_token_count == 3
    assert usage.total_token_count == 7 and usage.thoughts_token_count is None
    assert out.model_version == FLASH and out.response_id
    rec = fake.last_request
    assert rec.path == f"/v1beta/models/{FLASH}:generateContent" and rec.model == FLASH
    assert rec.headers["x-goog-api-key"] == KEY and rec.api_key == KEY
    assert rec.json["systemInstruction"]["parts"][0]["text"] == "be nice"
    v1 = _client(fake, None)  # keep a reference: a collected Client closes its transport
    out = v1.models.generate_content(model=FLASH, contents="hello")
    assert out.text == "echo: hello"
    assert fake.last_request.path == f"/v1/models/{FLASH}:generateContent"


def test_stream_text_and_raw_framing(fake: FakeGemini, client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model=FLASH, contents="a b c d"))
    assert len(chunks) > 2
    assert "".join(c.text or "" for c in chunks) == "echo: a b c d"
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[0].candidates and chunks[0].candidates[0].finish_reason is None
    assert last.usage_metadata and last.usage_metadata.candidates_token_count == 5
    assert fake.last_request.query_string == "alt=sse"
    body = {"contents": [{"role": "user", "parts": [{"text": "x y"}]}]}
    status, headers, raw = _raw(fake, f"/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", body)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    frames = raw.decode().split("\r\n\r\n")
    assert frames[-1] == "" and all(f.startswith("data: {") for f in frames[:-1])
    assert json.loads(frames[-2][6:])["usageMetadata"]["totalTokenCount"] == 2 + 3
    status, _, raw = _raw(fake, f"/v1/models/{FLASH}:streamGenerateContent", body)
    array = json.loads(raw)
    assert status == 200 and "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in array) == "echo: x y"  # fmt: skip


def test_function_calling(fake: FakeGemini, client: genai.Client) -> None:
    config = types.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AFC)
    out = client.models.generate_content(model=FLASH, contents="Paris now", config=config)
    assert out.function_calls and out.function_calls[0].name == "get_weather"
    assert out.function_calls[0].args == {"city": "Paris now", "days": 1}
    assert out.candidates and out.candidates[0].finish_reason == types.FinishReason.STOP
    part = out.candidates[0].content.parts[0]  # type: ignore[union-attr,index]
    assert part.thought_signature
    sent = fake.last_request.json["tools"][0]["functionDeclarations"][0]
    assert "parameters_json_schema" in sent
    stream = list(client.models.generate_content_stream(model=FLASH, contents="x", config=config))
    assert [c.function_calls[0].name for c in stream if c.function_calls] == ["get_weather"]
    none = types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE"))
    config.tool_config = none
    out = client.models.generate_content(model=FLASH, contents="q", config=config)
    assert out.text == "echo: q" and not out.function_calls


def _history(signature: str | None) -> list[dict[str, Any]]:
    call: dict[str, Any] = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    if signature is not None:
        call["thoughtSignature"] = signature
    return [
        {"role": "user", "parts": [{"text": "weather in Paris"}]},
        {"role": "model", "parts": [call]},
        {"role": "user", "parts": [{"function_response": {"name": "get_weather", "response": {}}}]},
    ]


def test_thought_signature_validation() -> None:
    with FakeGemini(api_key=KEY, require_thought_signatures=True) as strict:
        client = _client(strict)
        config = types.GenerateContentConfig(tools=[WEATHER], automatic_function_calling=NO_AFC)
        first = client.models.generate_content(model=FLASH, contents="weather", config=config)
        assert first.candidates and first.candidates[0].content
        turns = [types.Content(role="user", parts=[types.Part(text="weather")])]
        turns.append(first.candidates[0].content)
        reply = types.Part.from_function_response(name="get_weather", response={"t": 20})
        turns.append(types.Content(role="user", parts=[reply]))
        out = client.models.generate_content(model=FLASH, contents=turns, config=config)
        assert out.text == "echo: weather" and not out.function_calls  # tool result -> text
        assert _raw(strict, f"/v1beta/models/{FLASH}:generateContent", {"contents": _history(SKIP_SIGNATURE)})[0] == 200  # fmt: skip
        with pytest.raises(errors.ClientError) as exc:
            client.models.generate_content(model=FLASH, contents=_history(None), config=config)
        assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"
        assert "thought_signature" in (exc.value.message or "")


def test_thinking_candidates_and_limits(fake: FakeGemini, client: genai.Client) -> None:
    thinking = types.ThinkingConfig(include_thoughts=True, thinking_budget=512)
    out = client.models.generate_content(
        model=FLASH, contents="why", config=types.GenerateContentConfig(thinking_config=thinking)
    )
    parts = out.candidates[0].content.parts  # type: ignore[index,union-attr]
    assert parts and parts[0].thought and parts[0].text == "thinking about: why"
    assert parts[1].text == "echo: why" and out.text == "echo: why"
    assert out.usage_metadata and out.usage_metadata.thoughts_token_count == 3
    sent = fake.last_request.json["generationConfig"]["thinkingConfig"]
    assert sent == {"include_thoughts": True, "thinking_budget": 512}
    out = client.models.generate_content(
        model=FLASH, contents="a b", config=types.GenerateContentConfig(candidate_count=2)
    )
    texts = [c.content.parts[0].text for c in out.candidates or []]  # type: ignore[union-attr,index]
    assert texts == ["echo: a b", "echo: a b (1)"]
    body = {
        "system_instruction": {"parts": [{"text": "sys"}]},
        "contents": [{"parts": [{"text": "one two three END four"}]}],
        "generation_config": {"max_output_tokens": 3, "stop_sequences": ["END"]},
    }
    status, _, raw = _raw(fake, f"/v1beta/models/{FLASH}:generateContent?key={KEY}", body, {"x-goog-api-key": ""})  # fmt: skip
    cand = json.loads(raw)["candidates"][0]
    assert status == 200 and cand["finishReason"] == "MAX_TOKENS"
    assert cand["content"]["parts"][0]["text"] == "echo: one two"
    body["generation_config"] = {"stop_sequences": ["END"]}
    raw = _raw(fake, f"/v1beta/models/{FLASH}:generateContent", body)[2]
    cand = json.loads(raw)["candidates"][0]
    assert cand["content"]["parts"][0]["text"] == "echo: one two three "
    assert cand["finishReason"] == "STOP"


def test_count_tokens_and_embeddings(fake: FakeGemini, client: genai.Client) -> None:
    assert client.models.count_tokens(model=FLASH, contents="a b c").total_tokens == 3
    config = types.EmbedContentConfig(output_dimensionality=4)
    out = client.models.embed_content(
        model="gemini-embedding-001", contents=["a", "b"], config=config
    )
    assert [e.values for e in out.embeddings or []] == [embedding_vector("a", 4), embedding_vector("b", 4)]  # fmt: skip
    assert fake.last_request.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    body = {"content": {"parts": [{"text": "a"}]}}
    raw = _raw(fake, "/v1beta/models/gemini-embedding-001:embedContent", body)[2]
    assert json.loads(raw) == {"embedding": {"values": embedding_vector("a", 8)}}


def test_models_list_and_get(fake: FakeGemini, client: genai.Client) -> None:
    names = [m.name for m in client.models.list(config={"page_size": 2})]
    assert names == [f"models/{m}" for m in fake.models]
    got = client.models.get(model=FLASH)
    assert got.display_name == "Gemini 2.5 Flash" and "generateContent" in (got.supported_actions or [])  # fmt: skip
    with pytest.raises(errors.ClientError) as exc:
        client.models.get(model="nope")
    assert exc.value.code == 404 and exc.value.status == "NOT_FOUND"


def test_errors_and_auth(fake: FakeGemini, client: genai.Client) -> None:
    fake.set_fault("m-429", Fault("status", status=429, retry_after=7))
    fake.set_fault("m-503", Fault("status", status=503, times=1))
    with pytest.raises(errors.ClientError) as exc:
        client.models.generate_content(model="m-429", contents="x")
    assert exc.value.code == 429 and exc.value.status == "RESOURCE_EXHAUSTED"
    assert exc.value.details["error"]["details"][-1]["retryDelay"] == "7s"
    with pytest.raises(errors.ServerError) as srv:
        client.models.generate_content(model="m-503", contents="x")
    assert srv.value.code == 503 and srv.value.status == "UNAVAILABLE"
    assert client.models.generate_content(model="m-503", contents="x").text == "echo: x"
    with pytest.raises(errors.ClientError) as bad:
        wrong = _client(fake, key="AIza-wrong")
        wrong.models.generate_content(model=FLASH, contents="x")
    assert bad.value.code == 400 and bad.value.message == "API key not valid. Please pass a valid API key."  # fmt: skip
    status, _, raw = _raw(fake, "/v1beta/models", headers={"x-goog-api-key": ""})
    assert status == 403 and json.loads(raw)["error"]["status"] == "PERMISSION_DENIED"
    fake.set_fault("m-echo", Fault("error_echo_key"))
    status, _, raw = _raw(fake, "/v1beta/models/m-echo:generateContent", {"contents": []})
    assert status == 400 and KEY[-4:] in json.loads(raw)["error"]["message"]


def test_stream_faults(fake: FakeGemini, client: genai.Client) -> None:
    fake.set_fault("m-err", Fault("mid_stream_error", after_chunks=2))
    got: list[str] = []
    with pytest.raises(errors.ServerError) as exc:
        for chunk in client.models.generate_content_stream(model="m-err", contents="a b c"):
            got.append(chunk.text or "")
    assert got == ["echo:", " a"] and exc.value.code == 500
    fake.set_fault("m-reset", Fault("reset_mid_stream", after_chunks=1))
    with pytest.raises(httpx2.TransportError):
        list(client.models.generate_content_stream(model="m-reset", contents="a b c"))
    fake.set_fault("m-bad", Fault("malformed_chunk", after_chunks=1))
    status, _, raw = _raw(fake, "/v1beta/models/m-bad:streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "q"}]}]})  # fmt: skip
    assert status == 200 and b"data: {not json\r\n\r\n" in raw
    with pytest.raises(errors.UnknownApiResponseError):
        list(client.models.generate_content_stream(model="m-bad", contents="q"))
    assert fake.wait_until(lambda: fake.active == 0)
    bad = {"contents": [{"parts": [{"image_url": "x"}]}]}
    status, _, raw = _raw(fake, f"/v1beta/models/{FLASH}:generateContent", bad)
    assert status == 400 and 'Unknown name "image_url"' in json.loads(raw)["error"]["message"]


def test_search_grounding_and_its_mix_with_functions(fake: FakeGemini) -> None:
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "search the news"}]}],
        "tools": [{"googleSearch": {}}],
    }
    status, _, raw = _raw(fake, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    candidate = json.loads(raw)["candidates"][0]
    assert status == 200 and candidate["groundingMetadata"]["webSearchQueries"] == [
        "search the news"
    ]
    body["tools"].append({"functionDeclarations": [{"name": "f"}]})
    status, _, raw = _raw(fake, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    assert status == 400
    assert json.loads(raw)["error"]["message"] == "Tool use with function calling is unsupported"
