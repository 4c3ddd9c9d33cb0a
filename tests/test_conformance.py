"""The conformance matrix: each official SDK as client × each upstream protocol.

3 clients (openai, anthropic, google-genai) × 3 upstreams (fakes speaking OpenAI, Anthropic and
Gemini wire formats on 127.0.0.1) × {non-stream, stream} × {text, tools, image, error}. Same
protocol in and out is the passthrough; every other pair goes through the canonical model.
The SDKs parse every answer (openai and anthropic with strict response validation on).
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from conftest import CLIENT_KEY
from fakes.anthropic_upstream import FakeAnthropic
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import FakeOpenAI, Fault
from gateway import Gateway
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452")).decode()
UPSTREAMS = ["openai", "anthropic", "gemini"]
CLIENTS = ["openai", "anthropic", "gemini"]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    with (
        FakeOpenAI(api_key="sk-up-openai-0123456789") as fo,
        FakeAnthropic(api_key="sk-ant-up-0123456789") as fa,
        FakeGemini(api_key="AIza-up-gemini-0123456789") as fg,
    ):
        yield {"openai": fo, "anthropic": fa, "gemini": fg}


@pytest.fixture(scope="module")
def gw(fakes: dict[str, Any]) -> Iterator[Gateway]:
    config = f"""
providers:
  p-openai: {{type: openai, base_url: "{fakes["openai"].base_url}", api_key: sk-up-openai-0123456789}}
  p-anthropic: {{type: anthropic, base_url: "{fakes["anthropic"].url}", api_key: sk-ant-up-0123456789}}
  p-gemini: {{type: gemini, base_url: "{fakes["gemini"].url}", api_key: AIza-up-gemini-0123456789}}
  p-deepseek: {{type: deepseek, base_url: "{fakes["openai"].base_url}", api_key: sk-up-openai-0123456789}}
models:
  up-openai: [{{provider: p-openai, model: gpt-4o-mini}}]
  up-anthropic: [{{provider: p-anthropic, model: claude-sonnet-4-6}}]
  up-gemini: [{{provider: p-gemini, model: gemini-2.5-flash}}]
  up-deepseek: [{{provider: p-deepseek, model: gpt-4o-mini}}]
keys: [{{name: t, key: {CLIENT_KEY}}}]
"""
    with Gateway(config) as g:
        yield g


UPSTREAM_MODEL = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-sonnet-4-6",
    "gemini": "gemini-2.5-flash",
}


@pytest.fixture(autouse=True)
def _clean(fakes: dict[str, Any]) -> Iterator[None]:
    for f in fakes.values():
        f.reset()
    yield
    for f in fakes.values():
        f.clear_faults()


# ------------------------------------------------------------------------- the three clients


class OpenAIClient:
    def __init__(self, gw: Gateway) -> None:
        self.c = openai.OpenAI(
            base_url=gw.base_url,
            api_key=CLIENT_KEY,
            max_retries=0,
            _strict_response_validation=True,
            timeout=20,
        )

    def text(self, model: str, prompt: str, stream: bool, image: bool = False) -> str:
        content: Any = prompt
        if image:
            content = [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ]
        msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]
        if not stream:
            r = self.c.chat.completions.create(model=model, messages=msgs, max_tokens=100)
            assert r.usage is not None and r.usage.prompt_tokens > 0
            assert r.choices[0].finish_reason == "stop"
            return r.choices[0].message.content or ""
        with self.c.chat.completions.stream(model=model, messages=msgs, max_tokens=100) as s:
            final = s.get_final_completion()
        assert final.choices[0].finish_reason == "stop"
        return final.choices[0].message.content or ""

    def tool(self, model: str, stream: bool) -> tuple[str, dict[str, Any]]:
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ]
        msgs = [{"role": "user", "content": "Paris"}]
        if stream:
            with self.c.chat.completions.stream(model=model, messages=msgs, tools=tools) as s:
                msg = s.get_final_completion().choices[0]
        else:
            msg = self.c.chat.completions.create(model=model, messages=msgs, tools=tools).choices[0]
        assert msg.finish_reason == "tool_calls"
        call = msg.message.tool_calls[0]
        return call.function.name, json.loads(call.function.arguments)

    def error(self, model: str, stream: bool) -> int:
        try:
            if stream:
                list(
                    self.c.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "x"}], stream=True
                    )
                )
            else:
                self.c.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "x"}]
                )
        except openai.APIStatusError as exc:
            return exc.status_code
        except openai.APIError:
            return -1  # an error event inside the stream
        raise AssertionError("no error raised")


class AnthropicClient:
    def __init__(self, gw: Gateway) -> None:
        self.c = anthropic.Anthropic(
            base_url=gw.url,
            api_key=CLIENT_KEY,
            max_retries=0,
            _strict_response_validation=True,
            timeout=20,
        )

    def text(self, model: str, prompt: str, stream: bool, image: bool = False) -> str:
        content: Any = prompt
        if image:
            content = [
                {"type": "text", "text": prompt},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                },
            ]
        kw: dict[str, Any] = {
            "model": model,
            "max_tokens": 100,
            "system": "be brief",
            "messages": [{"role": "user", "content": content}],
        }
        if stream:
            with self.c.messages.stream(**kw) as s:
                m = s.get_final_message()
        else:
            m = self.c.messages.create(**kw)
        assert m.stop_reason == "end_turn" and m.usage.output_tokens > 0
        return "".join(b.text for b in m.content if b.type == "text")

    def tool(self, model: str, stream: bool) -> tuple[str, dict[str, Any]]:
        kw: dict[str, Any] = {
            "model": model,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Paris"}],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "weather",
                    "input_schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                }
            ],
        }
        if stream:
            with self.c.messages.stream(**kw) as s:
                m = s.get_final_message()
        else:
            m = self.c.messages.create(**kw)
        assert m.stop_reason == "tool_use"
        block = next(b for b in m.content if b.type == "tool_use")
        return block.name, dict(block.input)

    def error(self, model: str, stream: bool) -> int:
        kw: dict[str, Any] = {
            "model": model,
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
        }
        try:
            if stream:
                with self.c.messages.stream(**kw) as s:
                    s.get_final_message()
            else:
                self.c.messages.create(**kw)
        except anthropic.APIStatusError as exc:
            return -1 if stream and exc.response.status_code == 200 else exc.status_code
        raise AssertionError("no error raised")


class GeminiClient:
    def __init__(self, gw: Gateway) -> None:
        self.c = genai.Client(
            api_key=CLIENT_KEY,
            http_options=types.HttpOptions(base_url=gw.url, api_version="v1beta", timeout=20_000),
        )

    def text(self, model: str, prompt: str, stream: bool, image: bool = False) -> str:
        parts = [types.Part.from_text(text=prompt)]
        if image:
            parts.append(types.Part.from_bytes(data=base64.b64decode(PNG), mime_type="image/png"))
        contents = [types.Content(role="user", parts=parts)]
        cfg = types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=100)
        if stream:
            chunks = list(
                self.c.models.generate_content_stream(model=model, contents=contents, config=cfg)
            )
            assert chunks[-1].usage_metadata is not None
            assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
            return "".join(ch.text or "" for ch in chunks)
        r = self.c.models.generate_content(model=model, contents=contents, config=cfg)
        assert r.usage_metadata is not None and r.usage_metadata.prompt_token_count
        return r.text or ""

    def tool(self, model: str, stream: bool) -> tuple[str, dict[str, Any]]:
        decl = types.FunctionDeclaration(
            name="get_weather",
            description="weather",
            parameters_json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        )
        cfg = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[decl])],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if stream:
            calls = [
                c
                for ch in self.c.models.generate_content_stream(
                    model=model, contents="Paris", config=cfg
                )
                for c in (ch.function_calls or [])
            ]
        else:
            calls = self.c.models.generate_content(
                model=model, contents="Paris", config=cfg
            ).function_calls
        assert calls
        return calls[0].name, dict(calls[0].args)

    def error(self, model: str, stream: bool) -> int:
        try:
            if stream:
                list(self.c.models.generate_content_stream(model=model, contents="x"))
            else:
                self.c.models.generate_content(model=model, contents="x")
        except genai_errors.APIError as exc:
            return int(exc.code)
        raise AssertionError("no error raised")


CLIENT_CLASSES = {"openai": OpenAIClient, "anthropic": AnthropicClient, "gemini": GeminiClient}


def make(client: str, gw: Gateway) -> Any:
    return CLIENT_CLASSES[client](gw)


def _sent(fake: Any) -> Any:
    return fake.last_request.json


# ------------------------------------------------------------------------- the matrix

matrix = pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])
pairs = pytest.mark.parametrize(
    ("client", "upstream"), [(c, u) for c in CLIENTS for u in UPSTREAMS]
)


@pairs
@matrix
def test_text(gw: Gateway, fakes: dict[str, Any], client: str, upstream: str, stream: bool) -> None:
    text = make(client, gw).text(f"up-{upstream}", "hello there", stream)
    assert text == "echo: hello there"
    sent = fakes[upstream].last_request
    assert sent.model == UPSTREAM_MODEL[upstream]
    body = json.dumps(sent.json)
    assert "be brief" in body  # the system prompt reached the upstream
    assert CLIENT_KEY not in str(dict(sent.headers))
    record = gw.log.last()
    assert record["status"] == 200 and record["usage"]["output_tokens"] > 0


@pairs
@matrix
def test_tools(
    gw: Gateway, fakes: dict[str, Any], client: str, upstream: str, stream: bool
) -> None:
    name, args = make(client, gw).tool(f"up-{upstream}", stream)
    assert name == "get_weather"
    assert args == {"city": "Paris"}


@pairs
@matrix
def test_image(
    gw: Gateway, fakes: dict[str, Any], client: str, upstream: str, stream: bool
) -> None:
    text = make(client, gw).text(f"up-{upstream}", "describe", stream, image=True)
    assert text == "echo: describe"
    sent = json.dumps(fakes[upstream].last_request.json)
    assert PNG in sent
    marker = {"openai": "image_url", "anthropic": '"type": "image"', "gemini": "inlineData"}[
        upstream
    ]
    assert marker in sent


@pairs
def test_error_rate_limited(gw: Gateway, fakes: dict[str, Any], client: str, upstream: str) -> None:
    fakes[upstream].set_fault(UPSTREAM_MODEL[upstream], Fault("status", status=429, retry_after=0))
    assert make(client, gw).error(f"up-{upstream}", False) == 429


@pairs
def test_error_upstream_5xx_is_502(
    gw: Gateway, fakes: dict[str, Any], client: str, upstream: str
) -> None:
    fakes[upstream].set_fault(UPSTREAM_MODEL[upstream], Fault("status", status=500))
    assert make(client, gw).error(f"up-{upstream}", False) == 502


@pairs
def test_error_mid_stream(gw: Gateway, fakes: dict[str, Any], client: str, upstream: str) -> None:
    fakes[upstream].set_fault(UPSTREAM_MODEL[upstream], Fault("mid_stream_error", after_chunks=2))
    before = len(gw.log.lines)
    got = make(client, gw).error(f"up-{upstream}", True)
    assert got != 200
    assert gw.log.wait_until(lambda r: r.get("error") == "upstream_stream_error", before)


def test_mid_conversation_system_message_gets_its_beta(gw: Gateway, fakes: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    client.chat.completions.create(
        model="up-anthropic",
        max_tokens=50,
        messages=[
            {"role": "system", "content": "lead"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "system", "content": "later"},
            {"role": "user", "content": "c"},
        ],
    )
    sent = fakes["anthropic"].last_request
    assert sent.json["system"] == "lead" or sent.json["system"][0]["text"] == "lead"
    assert {"role": "system", "content": "later"} in sent.json["messages"] or any(
        m["role"] == "system" for m in sent.json["messages"]
    )
    assert "mid-conversation-system-2026-04-07" in sent.headers["anthropic-beta"]


# The Responses API (Codex, newer OpenAI clients) to providers that do not speak it.
RESPONSES_TARGETS = [("anthropic", "anthropic"), ("gemini", "gemini"), ("deepseek", "openai")]


@pytest.mark.parametrize(("alias", "fake"), RESPONSES_TARGETS)
@matrix
def test_responses_api_translated(
    gw: Gateway, fakes: dict[str, Any], alias: str, fake: str, stream: bool
) -> None:
    client = openai.OpenAI(
        base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, _strict_response_validation=True
    )
    kw: dict[str, Any] = {
        "model": f"up-{alias}",
        "instructions": "be brief",
        "input": "hello there",
        "max_output_tokens": 100,
        "store": False,
    }
    if stream:
        with client.responses.stream(**kw) as s:
            final = s.get_final_response()
    else:
        final = client.responses.create(**kw)
    assert final.output_text == "echo: hello there"
    assert final.usage is not None and final.usage.output_tokens > 0
    sent = fakes[fake].last_request
    assert "/responses" not in sent.path  # translated, not passed through
    assert "be brief" in json.dumps(sent.json)


@pytest.mark.parametrize(("alias", "fake"), RESPONSES_TARGETS)
def test_responses_api_tool_loop_translated(
    gw: Gateway, fakes: dict[str, Any], alias: str, fake: str
) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "weather",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    with client.responses.stream(model=f"up-{alias}", input="Paris", tools=tools, store=False) as s:
        first = s.get_final_response()
    call = next(o for o in first.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    history = [
        {"role": "user", "content": "Paris"},
        *[o.model_dump(exclude_none=True) for o in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = client.responses.create(model=f"up-{alias}", input=history, store=False)
    assert second.output_text.startswith("echo:")


@pytest.mark.parametrize(
    ("path", "upstream", "body", "headers"),
    [
        (
            "/v1beta/models/up-gemini:generateContent",
            "gemini",
            {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            {"x-goog-api-key": CLIENT_KEY},
        ),
        (
            "/v1/messages",
            "anthropic",
            {
                "model": "up-anthropic",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            },
            {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
        ),
    ],
)
def test_steering_fields_are_stripped_from_every_passthrough(
    gw: Gateway,
    fakes: dict[str, Any],
    path: str,
    upstream: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    # Relays built on one-api/new-api/LiteLLM may honour these (issue 8, item 8).
    steering = ("headers", "litellm_params", "user_config", "azure_endpoint", "url", "proxy")
    sent = {**body, **{name: {"x": "http://127.0.0.1:1/"} for name in steering}}
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request(
        "POST", path, body=json.dumps(sent), headers={**headers, "Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    got = fakes[upstream].last_request.json
    assert got["contents" if upstream == "gemini" else "messages"]
    assert not set(steering) & set(got)
