"""Every response shape Qiao writes itself, checked against the current SDKs' own types.

An SDK parsing an answer only proves the fields it reads are there; a required field it does not
read yet (anthropic 2.14's ``ModelInfo.lifecycle``) fails the next SDK release. So each shape
Qiao produces — translated answers and streams, the model lists, local token counts,
embeddings, errors — is validated here against the SDK's pydantic model with strict JSON
validation: every required field present, every type right. The openai and anthropic SDKs also
read them over the socket with ``_strict_response_validation=True``; google-genai's types
forbid unknown fields, so a Gemini-shaped answer may hold no field Gemini does not have.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import ErrorResponse as AnthropicError
from anthropic.types import Message, MessageTokensCount, ModelInfo, RawMessageStreamEvent
from conftest import CLIENT_KEY
from fakes.anthropic_upstream import FakeAnthropic
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import FakeOpenAI
from gateway import Gateway
from google.genai import types as gtypes
from openai.types import CreateEmbeddingResponse
from openai.types import Model as OpenAIModel
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as ResponsesAnswer
from openai.types.responses import ResponseStreamEvent
from openai.types.shared import ErrorObject
from pydantic import BaseModel, TypeAdapter

ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}
TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with (
        FakeOpenAI(api_key="sk-up-openai-0123456789") as fo,
        FakeAnthropic(api_key="sk-ant-up-0123456789") as fa,
        FakeGemini(api_key="AIza-up-gemini-0123456789") as fg,
    ):
        config = f"""
providers:
  p-openai: {{type: openai, base_url: "{fo.base_url}", api_key: sk-up-openai-0123456789}}
  p-anthropic: {{type: anthropic, base_url: "{fa.url}", api_key: sk-ant-up-0123456789}}
  p-gemini: {{type: gemini, base_url: "{fg.url}", api_key: AIza-up-gemini-0123456789}}
  p-deepseek: {{type: deepseek, base_url: "{fo.base_url}", api_key: sk-up-openai-0123456789}}
models:
  up-openai: [{{provider: p-openai, model: gpt-4o-mini}}]
  up-anthropic: [{{provider: p-anthropic, model: claude-sonnet-4-6}}]
  up-gemini: [{{provider: p-gemini, model: gemini-2.5-flash}}]
  up-deepseek: [{{provider: p-deepseek, model: gpt-4o-mini}}]
  emb-gemini: [{{provider: p-gemini, model: gemini-embedding-001}}]
  emb-openai: [{{provider: p-openai, model: text-embedding-3-small}}]
keys: [{{name: t, key: {CLIENT_KEY}}}]
"""
        with Gateway(config) as g:
            yield g


# ------------------------------------------------------------------------- helpers


def strict(model: Any, raw: bytes | str | dict[str, Any]) -> Any:
    """``raw`` validated as ``model`` (a pydantic model or an annotated union) in strict mode."""
    data = raw if isinstance(raw, bytes | str) else json.dumps(raw)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model.model_validate_json(data, strict=True)
    return TypeAdapter(model).validate_json(data, strict=True)


@dataclass
class Answer:
    status: int
    content_type: str
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def call(gw: Gateway, path: str, body: dict[str, Any] | None = None, **headers: str) -> Answer:
    sent = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    sent.update(headers)
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request("GET" if body is None else "POST", path, body=data, headers=sent)
        resp = conn.getresponse()
        return Answer(resp.status, resp.getheader("Content-Type", ""), resp.read())
    finally:
        conn.close()


def sse_data(resp: Answer) -> list[bytes]:
    """The ``data`` payloads of an SSE answer, ``[DONE]`` left out."""
    assert resp.status == 200, resp.content
    assert resp.content_type.startswith("text/event-stream")
    out = []
    for event in resp.content.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(
            line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
        )
        if data and data != b"[DONE]":
            out.append(data)
    assert out
    return out


def ok(resp: Answer) -> bytes:
    assert resp.status == 200, resp.content
    return resp.content


# Qiao writes these answers itself: the client's protocol differs from the upstream's.
TO_OPENAI = ["up-anthropic", "up-gemini"]
TO_ANTHROPIC = ["up-openai", "up-gemini"]
TO_GEMINI = ["up-openai", "up-anthropic"]
RESPONSES = ["up-anthropic", "up-gemini", "up-deepseek"]
with_tools = pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])


# ------------------------------------------------------------------------- OpenAI shapes


def _chat(model: str, tools: bool, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Paris"}],
        "max_tokens": 50,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if tools:
        fn = {"name": "get_weather", "description": "weather", "parameters": TOOL_SCHEMA}
        body["tools"] = [{"type": "function", "function": fn}]
    return body


@pytest.mark.parametrize("model", TO_OPENAI)
@with_tools
def test_openai_chat(gw: Gateway, model: str, tools: bool) -> None:
    answer = strict(
        ChatCompletion, ok(call(gw, "/v1/chat/completions", _chat(model, tools, False)))
    )
    assert answer.choices[0].finish_reason == ("tool_calls" if tools else "stop")
    chunks = sse_data(call(gw, "/v1/chat/completions", _chat(model, tools, True)))
    parsed = [strict(ChatCompletionChunk, c) for c in chunks]
    assert parsed[-1].usage is not None


def _responses(model: str, tools: bool, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "input": "Paris",
        "instructions": "be brief",
        "store": False,
        "stream": stream,
        "max_output_tokens": 50,
    }
    if tools:
        body["tools"] = [
            {"type": "function", "name": "get_weather", "parameters": TOOL_SCHEMA, "strict": False}
        ]
    return body


@pytest.mark.parametrize("model", RESPONSES)
@pytest.mark.parametrize("variant", ["text", "tools", "reasoning"])
def test_openai_responses(gw: Gateway, model: str, variant: str) -> None:
    body = _responses(model, variant == "tools", False)
    if variant == "reasoning":
        body |= {"reasoning": {"effort": "low", "summary": "auto"}, "max_output_tokens": 4000}
    answer = strict(ResponsesAnswer, ok(call(gw, "/v1/responses", body)))
    assert answer.status == "completed"
    if variant == "reasoning" and model != "up-deepseek":
        assert answer.output[0].type == "reasoning"
    events = [
        strict(ResponseStreamEvent, e)
        for e in sse_data(call(gw, "/v1/responses", body | {"stream": True}))
    ]
    assert events[-1].type == "response.completed"


@pytest.mark.parametrize("inputs", ["one", ["one", "two"]], ids=["single", "batch"])
def test_openai_embeddings(gw: Gateway, inputs: Any) -> None:
    body = {"model": "emb-gemini", "input": inputs, "encoding_format": "float"}
    answer = strict(CreateEmbeddingResponse, ok(call(gw, "/v1/embeddings", body)))
    assert len(answer.data) == (1 if isinstance(inputs, str) else 2)


def test_openai_models(gw: Gateway) -> None:
    page = json.loads(ok(call(gw, "/v1/models")))
    assert page["object"] == "list"
    models = [strict(OpenAIModel, m) for m in page["data"]]
    assert "up-openai" in [m.id for m in models]
    strict(OpenAIModel, ok(call(gw, "/v1/models/up-anthropic")))


def test_openai_error(gw: Gateway) -> None:
    resp = call(gw, "/v1/chat/completions", {"model": "up-anthropic"})
    assert resp.status == 400
    strict(ErrorObject, resp.json()["error"])


# ------------------------------------------------------------------------- Anthropic shapes


def _messages(model: str, tools: bool, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Paris"}],
        "stream": stream,
    }
    if tools:
        body["tools"] = [{"name": "get_weather", "description": "w", "input_schema": TOOL_SCHEMA}]
    return body


@pytest.mark.parametrize("model", TO_ANTHROPIC)
@with_tools
def test_anthropic_messages(gw: Gateway, model: str, tools: bool) -> None:
    path = "/v1/messages"
    answer = strict(
        Message, ok(call(gw, path, _messages(model, tools, False), **ANTHROPIC_VERSION))
    )
    assert answer.stop_reason == ("tool_use" if tools else "end_turn")
    stream = call(gw, path, _messages(model, tools, True), **ANTHROPIC_VERSION)
    events = [strict(RawMessageStreamEvent, e) for e in sse_data(stream)]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"


def test_anthropic_count_tokens(gw: Gateway) -> None:
    body = _messages("up-gemini", False, False)
    resp = call(gw, "/v1/messages/count_tokens", body, **ANTHROPIC_VERSION)
    assert strict(MessageTokensCount, ok(resp)).input_tokens > 0


def test_anthropic_models(gw: Gateway) -> None:
    page = json.loads(ok(call(gw, "/v1/models", **ANTHROPIC_VERSION)))
    assert page["has_more"] is False
    models = [strict(ModelInfo, m) for m in page["data"]]
    assert page["first_id"] == models[0].id and page["last_id"] == models[-1].id
    strict(ModelInfo, ok(call(gw, "/v1/models/up-gemini", **ANTHROPIC_VERSION)))


def test_anthropic_models_through_the_strict_sdk(gw: Gateway) -> None:
    client = anthropic.Anthropic(
        base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, _strict_response_validation=True
    )
    listed = client.models.list()
    assert {m.id for m in listed.data} >= {"up-openai", "up-anthropic", "up-gemini"}
    assert all(m.lifecycle == "active" for m in listed.data)
    one = client.models.retrieve("up-openai")
    assert one.id == "up-openai" and one.type == "model"


def test_openai_models_through_the_strict_sdk(gw: Gateway) -> None:
    client = openai.OpenAI(
        base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, _strict_response_validation=True
    )
    assert "up-gemini" in [m.id for m in client.models.list()]
    assert client.models.retrieve("up-gemini").owned_by


def test_anthropic_error(gw: Gateway) -> None:
    resp = call(gw, "/v1/messages", {"model": "up-openai"}, **ANTHROPIC_VERSION)
    assert resp.status == 400
    strict(AnthropicError, resp.content)


# ------------------------------------------------------------------------- Gemini shapes


def _generate(tools: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "Paris"}]}],
        "generationConfig": {"maxOutputTokens": 50},
    }
    if tools:
        decl = {"name": "get_weather", "description": "w", "parametersJsonSchema": TOOL_SCHEMA}
        body["tools"] = [{"functionDeclarations": [decl]}]
    return body


@pytest.mark.parametrize("model", TO_GEMINI)
@with_tools
def test_gemini_generate_content(gw: Gateway, model: str, tools: bool) -> None:
    base = f"/v1beta/models/{model}"
    answer = strict(
        gtypes.GenerateContentResponse, ok(call(gw, f"{base}:generateContent", _generate(tools)))
    )
    assert answer.candidates and answer.candidates[0].finish_reason == gtypes.FinishReason.STOP
    chunks = sse_data(call(gw, f"{base}:streamGenerateContent?alt=sse", _generate(tools)))
    parsed = [strict(gtypes.GenerateContentResponse, c) for c in chunks]
    assert parsed[-1].usage_metadata is not None


def test_gemini_count_tokens(gw: Gateway) -> None:
    resp = call(gw, "/v1beta/models/up-openai:countTokens", _generate(False))
    assert strict(gtypes.CountTokensResponse, ok(resp)).total_tokens


def test_gemini_embeddings(gw: Gateway) -> None:
    batch = {
        "requests": [
            {"model": "models/emb-openai", "content": {"parts": [{"text": t}]}} for t in "ab"
        ]
    }
    resp = call(gw, "/v1beta/models/emb-openai:batchEmbedContents", batch)
    assert len(strict(gtypes.EmbedContentResponse, ok(resp)).embeddings or []) == 2
    single = {"content": {"parts": [{"text": "a"}]}}
    resp = call(gw, "/v1beta/models/emb-openai:embedContent", single)
    strict(gtypes.ContentEmbedding, json.loads(ok(resp))["embedding"])


def test_gemini_models(gw: Gateway) -> None:
    page = json.loads(ok(call(gw, "/v1beta/models")))
    assert page["models"]
    for model in page["models"]:
        assert model["name"].startswith("models/")
        strict(gtypes.Model, _gemini_model(model))
    strict(gtypes.Model, _gemini_model(json.loads(ok(call(gw, "/v1beta/models/up-openai")))))


def _gemini_model(wire: dict[str, Any]) -> dict[str, Any]:
    """A wire model as google-genai turns it into its ``Model`` (field renames only)."""
    from google.genai.models import _Model_from_mldev

    converted: dict[str, Any] = _Model_from_mldev(wire)
    converted.pop("tuned_model_info")  # the converter copies the whole object there; the SDK
    return converted  # then strips it as an unknown field
