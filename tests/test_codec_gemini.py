"""The Gemini generateContent codec: SDK bodies in both casings, golden SSE transcripts split at
awkward boundaries, output parsed by the official google-genai SDK, round-trip properties,
embeddings, errors, and the refuse/drop rules."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import struct
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qiao.canonical import (
    Choice,
    Document,
    Event,
    Finish,
    Image,
    Message,
    Part,
    Reasoning,
    ReasoningConfig,
    ReasoningDelta,
    Request,
    Response,
    ResponseFormat,
    StreamError,
    StreamStart,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageEvent,
    WebSearch,
)
from qiao.codecs import embeddings as emb
from qiao.codecs import gemini as gc
from qiao.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    QiaoError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamTimeout,
)

SIG = base64.b64encode(b"gemini-signature-1").decode()
SIG2 = base64.b64encode(b"gemini-signature-2").decode()
SKIP = "skip_thought_signature_validator"

# protocols.md §1.3: the body google-genai 3.6.1 sent, mixed casing and all.
SDK_BODY: dict[str, Any] = orjson.loads(
    b"""{"contents":[
   {"parts":[{"text":"what"},{"inlineData":{"data":"iVBORw0K","mime_type":"image/png"}}],"role":"user"},
   {"parts":[{"functionCall":{"args":{"city":"Paris"},"name":"get_weather"}}],"role":"model"},
   {"parts":[{"functionResponse":{"name":"get_weather","response":{"result":"sunny"}}}],"role":"user"}],
 "systemInstruction":{"parts":[{"text":"sys"}],"role":"user"},
 "tools":[{"functionDeclarations":[{"description":"w","name":"get_weather",
           "parameters_json_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]}],
 "generationConfig":{"temperature":0.2,"maxOutputTokens":100,"stopSequences":["END"],
                     "thinkingConfig":{"include_thoughts":true,"thinking_budget":512}}}"""
)
CITY_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def wire(obj: object) -> Any:
    """Through real JSON, as the bytes would go."""
    return orjson.loads(orjson.dumps(obj))


# ============================================================================ decode_request


def test_decode_sdk_body() -> None:
    req = gc.decode_request(SDK_BODY, model="models/gemini-2.5-flash", stream=True)
    assert req.model == "gemini-2.5-flash" and req.stream and req.stream_usage
    assert req.system == [Text("sys")]
    assert req.messages == [
        Message("user", [Text("what"), Image(media_type="image/png", data="iVBORw0K")]),
        Message("assistant", [ToolCall("call_1_0", "get_weather", '{"city":"Paris"}')]),
        Message("tool", [ToolResult("call_1_0", [Text("sunny")], False, "get_weather")]),
    ]
    assert req.tools == [Tool("get_weather", "w", CITY_SCHEMA)]
    assert (req.temperature, req.max_tokens, req.stop) == (0.2, 100, ["END"])
    assert req.reasoning == ReasoningConfig(budget_tokens=512, include=True)


def test_decode_sdk_body_bytes_and_snake_case_everywhere() -> None:
    snake = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"file_data": {"mime_type": "application/pdf", "file_uri": "gs://b/x.pdf"}}
                ],
            }
        ],
        "system_instruction": {"parts": [{"text": "s"}]},
        "tool_config": {
            "function_calling_config": {"mode": "ANY", "allowed_function_names": ["f"]}
        },
        "tools": [
            {
                "function_declarations": [
                    {
                        "name": "f",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"a": {"type": "STRING", "nullable": True}},
                        },
                    }
                ]
            }
        ],
        "generation_config": {
            "top_p": 0.9,
            "top_k": 4,
            "candidate_count": 2,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "max_output_tokens": 9,
            "stop_sequences": ["x"],
            "response_mime_type": "application/json",
            "response_json_schema": {"type": "object"},
            "thinking_config": {"thinking_level": "HIGH"},
        },
    }
    req = gc.decode_request(orjson.dumps(snake), model="gemini-3-pro")
    assert req.messages == [
        Message("user", [Document(url="gs://b/x.pdf", media_type="application/pdf")])
    ]
    assert req.system == [Text("s")]
    assert req.tool_choice == ToolChoice("tool", "f")
    assert req.tools[0].parameters == {
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}},
    }
    assert (req.top_p, req.top_k, req.n, req.seed) == (0.9, 4, 2, 7)
    assert (req.presence_penalty, req.frequency_penalty, req.max_tokens, req.stop) == (
        0.5,
        -0.5,
        9,
        ["x"],
    )
    assert req.response_format == ResponseFormat("json_schema", {"type": "object"})
    assert req.reasoning == ReasoningConfig(effort="high", include=False)
    assert not req.stream


def test_decode_multi_turn_history_with_thinking_parallel_calls_and_images() -> None:
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "weather in Paris and Rome?"},
                    {"fileData": {"fileUri": "https://x/cat.png"}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Let me think", "thought": True, "thoughtSignature": SIG},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": SIG2,
                    },
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                    {"functionCall": {"id": "given-id", "name": "time", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {
                        "functionResponse": {
                            "id": "given-id",
                            "name": "time",
                            "response": {"now": 12},
                        }
                    },
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"error": "no data"}}},
                    {"text": "thanks"},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"text": "Done.", "thoughtSignature": SIG},
                    {"text": "", "thoughtSignature": SIG2},
                ],
            },
        ]
    }
    req = gc.decode_request(body, model="gemini-3-pro")
    assert req.messages == [
        Message("user", [Text("weather in Paris and Rome?"), Image(url="https://x/cat.png")]),
        Message(
            "assistant",
            [
                Reasoning("Let me think", "gemini:" + SIG),
                ToolCall("call_1_0", "get_weather", '{"city":"Paris"}', SIG2),
                ToolCall("call_1_1", "get_weather", '{"city":"Rome"}'),
                ToolCall("given-id", "time", "{}"),
            ],
        ),
        Message(
            "tool",
            [
                ToolResult("given-id", [Text('{"now":12}')], False, "time"),
                ToolResult("call_1_0", [Text("sunny")], False, "get_weather"),
                ToolResult("call_1_1", [Text("no data")], True, "get_weather"),
            ],
        ),
        Message("user", [Text("thanks")]),
        Message(
            "assistant",
            [Reasoning("", "gemini:" + SIG), Text("Done."), Reasoning("", "gemini:" + SIG2)],
        ),
    ]


@pytest.mark.parametrize(
    ("mode", "names", "choice", "tools"),
    [
        ("AUTO", [], ToolChoice("auto"), ["a", "b"]),
        ("NONE", [], ToolChoice("none"), ["a", "b"]),
        ("VALIDATED", [], ToolChoice("auto"), ["a", "b"]),
        ("ANY", [], ToolChoice("required"), ["a", "b"]),
        ("ANY", ["b"], ToolChoice("tool", "b"), ["a", "b"]),
        ("ANY", ["a", "b"], ToolChoice("required"), ["a", "b"]),
    ],
)
def test_decode_tool_config(
    mode: str, names: list[str], choice: ToolChoice, tools: list[str]
) -> None:
    decls = [{"name": "a"}, {"name": "b"}, {"name": "c"}]
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": decls}],
        "toolConfig": {"functionCallingConfig": {"mode": mode, "allowedFunctionNames": names}},
    }
    req = gc.decode_request(body, model="m")
    assert req.tool_choice == choice
    if names and len(names) > 1:
        assert [t.name for t in req.tools] == tools


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        (
            {"thinkingBudget": 0, "includeThoughts": True},
            ReasoningConfig(enabled=False, include=False),
        ),
        ({"thinkingBudget": -1}, ReasoningConfig(enabled=True, include=False)),
        (
            {"thinkingBudget": 2048, "includeThoughts": True},
            ReasoningConfig(budget_tokens=2048, include=True),
        ),
        ({"thinkingLevel": "LOW"}, ReasoningConfig(effort="low", include=False)),
        ({"include_thoughts": True}, ReasoningConfig(include=True)),
    ],
)
def test_decode_thinking_config(thinking: dict[str, Any], expected: ReasoningConfig) -> None:
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "generationConfig": {"thinkingConfig": thinking},
    }
    assert gc.decode_request(body, model="m").reasoning == expected


@pytest.mark.parametrize(
    ("gen", "expected"),
    [
        ({"responseMimeType": "application/json"}, ResponseFormat("json_object")),
        ({"responseMimeType": "text/plain"}, None),
        (
            {
                "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}},
            },
            ResponseFormat(
                "json_schema", {"type": "object", "properties": {"n": {"type": "integer"}}}
            ),
        ),
    ],
)
def test_decode_response_format(gen: dict[str, Any], expected: ResponseFormat | None) -> None:
    body = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": gen}
    assert gc.decode_request(body, model="m").response_format == expected


def test_decode_bare_signature_and_empty_model_turn() -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": ""}]},
            {"role": "model", "parts": [{"text": "a"}, {"thought_signature": SIG}]},
        ]
    }
    assert gc.decode_request(body, model="m").messages == [
        Message("user", [Text("q")]),
        Message("assistant", [Text("a"), Reasoning("", "gemini:" + SIG)]),
    ]


def test_decode_drops_safety_settings_and_logprobs() -> None:
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"responseLogprobs": True, "logprobs": 3},
    }
    req = gc.decode_request(body, model="m")
    assert req.messages == [Message("user", [Text("x")])]


def _turn(*parts: dict[str, Any], role: str = "user") -> dict[str, Any]:
    return {"contents": [{"role": role, "parts": list(parts)}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "contents must be a non-empty array"),
        ({"contents": "hi"}, "contents must be an array"),
        (
            {"contents": [{"role": "system", "parts": [{"text": "x"}]}]},
            "role must be 'user' or 'model'",
        ),
        (_turn({"text": 1}), "contents[0].parts[0].text must be a string"),
        (
            _turn({"text": "a", "inlineData": {"mimeType": "image/png", "data": "x"}}),
            "exactly one of",
        ),
        (_turn({"inlineData": {"mimeType": "audio/wav", "data": "UklG"}}), "audio and video"),
        (_turn({"inlineData": {"data": "x"}}), "needs mimeType and data"),
        (
            _turn({"functionResponse": {"name": "f", "response": {}}}),
            "answers no earlier functionCall",
        ),
        (_turn({"functionCall": {"name": "f"}}), "only valid in a model turn"),
        (_turn({"text": "x", "thought": True}), "only valid in a model turn"),
        (
            _turn({"functionCall": {"name": "f", "args": [1]}}, role="model"),
            "args must be an object",
        ),
        (_turn({"executableCode": {"code": "1"}}, role="model"), "cannot be translated"),
        (_turn({"functionResponse": {"name": "f"}}, role="model"), "only valid in a user turn"),
        (_turn(), "parts must be a non-empty array"),
        (_turn({}), "contents[0].parts[0] must have exactly one of"),
        ({**_turn({"text": "x"}), "cachedContent": "cachedContents/1"}, "Gemini-side cache"),
        ({**_turn({"text": "x"}), "tools": [{"googleSearch": {}}]}, "built-in tool"),
        ({**_turn({"text": "x"}), "bogus": 1}, "bogus is not a supported field"),
        (
            {**_turn({"text": "x"}), "generationConfig": {"temperature": "hot"}},
            "temperature must be a number",
        ),
        (
            {**_turn({"text": "x"}), "generationConfig": {"responseModalities": ["IMAGE"]}},
            "other than TEXT",
        ),
        (
            {**_turn({"text": "x"}), "generationConfig": {"responseMimeType": "text/x.enum"}},
            "responseMimeType",
        ),
        (
            {
                **_turn({"text": "x"}),
                "generationConfig": {"maxOutputTokens": 1, "max_output_tokens": 2},
            },
            "given twice",
        ),
        (
            {
                **_turn({"text": "x"}),
                "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}},
            },
            "mode must be",
        ),
        (
            {
                **_turn({"text": "x"}),
                "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "toolConfig": {
                    "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}
                },
            },
            "names no declared",
        ),
    ],
)
def test_decode_request_refuses_bad_input(body: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        gc.decode_request(body, model="gemini-2.5-flash")
    assert message in info.value.message


def test_decode_request_needs_a_model() -> None:
    with pytest.raises(InvalidRequest, match="model"):
        gc.decode_request(_turn({"text": "x"}))


# ============================================================================ encode_request


def test_encode_request_from_openai_style_history() -> None:
    req = Request(
        model="alias",
        system=[Text("be brief", cache=True)],
        messages=[
            Message("system", [Text("also this")]),
            Message(
                "user", [Text("hi"), Image(url="data:image/png;base64,iVBORw0KGgo=", detail="high")]
            ),
            Message(
                "assistant",
                [
                    Reasoning("anthropic thinking", "EqQBCkgIARAB"),
                    Reasoning("", redacted="opaque"),
                    Text("calling"),
                    ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
                    ToolCall("call_b", "get_weather", "{not json"),
                ],
            ),
            Message("tool", [ToolResult("call_a", [Text('{"temp": 21}')])]),
            Message(
                "tool",
                [
                    ToolResult(
                        "call_b",
                        [Text("rain"), Image(media_type="image/jpeg", data="/9j/4AAQ")],
                        is_error=True,
                    )
                ],
            ),
            Message("system", [Text("the user is on mobile")]),
            Message("user", [Text("and tomorrow?"), Document(text="notes", title="t")]),
        ],
    )
    body = gc.encode_request(req, "gemini-3-pro")
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "also this"}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "hi"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            ],
        },
        {
            "role": "model",
            "parts": [
                {"text": "calling"},
                {
                    "functionCall": {
                        "name": "get_weather",
                        "args": {"city": "Paris"},
                        "id": "call_a",
                    },
                    "thoughtSignature": SKIP,
                },
                {
                    "functionCall": {
                        "name": "get_weather",
                        "args": {"_raw": "{not json"},
                        "id": "call_b",
                    }
                },
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "id": "call_a",
                        "name": "get_weather",
                        "response": {"temp": 21},
                    }
                },
                {
                    "functionResponse": {
                        "id": "call_b",
                        "name": "get_weather",
                        "response": {"error": "rain"},
                    }
                },
                {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
                {"text": "System: the user is on mobile"},
                {"text": "and tomorrow?"},
                {
                    "inlineData": {
                        "mimeType": "text/plain",
                        "data": base64.b64encode(b"notes").decode(),
                    }
                },
            ],
        },
    ]
    assert "generationConfig" not in body and "tools" not in body


def test_encode_request_keeps_gemini_signatures_in_place() -> None:
    req = Request(
        model="m",
        messages=[
            Message("user", [Text("q")]),
            Message(
                "assistant",
                [
                    Reasoning("thought", "gemini:" + SIG),
                    Reasoning("", "gemini:" + SIG2),
                    Text("answer"),
                    ToolCall("c1", "f", "{}", signature=SIG),
                    ToolCall("c2", "f", ""),
                ],
            ),
        ],
    )
    parts = gc.encode_request(req, "gemini-3-pro")["contents"][1]["parts"]  # type: ignore[index]
    assert parts == [
        {"text": "thought", "thought": True, "thoughtSignature": SIG},
        {"text": "answer", "thoughtSignature": SIG2},
        {"functionCall": {"name": "f", "args": {}, "id": "c1"}, "thoughtSignature": SIG},
        {
            "functionCall": {"name": "f", "args": {}, "id": "c2"}
        },  # parallel: only the first is signed
    ]


def test_encode_web_search_is_google_search() -> None:
    req = Request(model="m", messages=[Message("user", [Text("x")])], web_search=WebSearch())
    assert gc.encode_request(req, "gemini-2.5-flash")["tools"] == [{"googleSearch": {}}]
    req.tools = [Tool("f", None, CITY_SCHEMA)]
    assert gc.encode_request(req, "gemini-3-pro")["tools"] == [
        {"functionDeclarations": [{"name": "f", "parametersJsonSchema": CITY_SCHEMA}]},
        {"googleSearch": {}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice("auto"), {"mode": "AUTO"}),
        (ToolChoice("none"), {"mode": "NONE"}),
        (ToolChoice("required", parallel=False), {"mode": "ANY"}),
        (ToolChoice("tool", "f"), {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_encode_tool_choice(choice: ToolChoice, expected: dict[str, Any]) -> None:
    req = Request(
        model="m",
        messages=[Message("user", [Text("x")])],
        tools=[Tool("f", "d", CITY_SCHEMA, strict=True)],
        tool_choice=choice,
    )
    body = gc.encode_request(req, "gemini-2.5-flash")
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {"name": "f", "description": "d", "parametersJsonSchema": CITY_SCHEMA}
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_encode_generation_config() -> None:
    req = Request(
        model="m",
        messages=[Message("user", [Text("x")])],
        max_tokens=10,
        temperature=0.5,
        top_p=0.9,
        top_k=3,
        stop=["a", "b"],
        n=2,
        seed=1,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        response_format=ResponseFormat("json_schema", {"type": "object"}, "n", True),
        user="u",
        metadata={"k": "v"},
        stream=True,
        stream_usage=True,
    )
    assert gc.encode_request(req, "gemini-2.5-flash")["generationConfig"] == {
        "maxOutputTokens": 10,
        "temperature": 0.5,
        "topP": 0.9,
        "topK": 3,
        "seed": 1,
        "presencePenalty": 0.1,
        "frequencyPenalty": 0.2,
        "candidateCount": 2,
        "stopSequences": ["a", "b"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }
    req.response_format = ResponseFormat("json_object")
    gen = gc.encode_request(req, "gemini-2.5-flash")["generationConfig"]
    assert gen["responseMimeType"] == "application/json" and "responseJsonSchema" not in gen  # type: ignore[operator]


@pytest.mark.parametrize(
    ("model", "cfg", "expected"),
    [
        (
            "gemini-2.5-flash",
            ReasoningConfig(enabled=False),
            {"includeThoughts": False, "thinkingBudget": 0},
        ),
        (
            "gemini-3-pro",
            ReasoningConfig(effort="none"),
            {"includeThoughts": False, "thinkingBudget": 0},
        ),
        (
            "gemini-2.5-pro",
            ReasoningConfig(budget_tokens=999, effort="high"),
            {"includeThoughts": True, "thinkingBudget": 999},
        ),
        (
            "gemini-2.5-flash",
            ReasoningConfig(effort="medium", include=False),
            {"includeThoughts": False, "thinkingBudget": 8192},
        ),
        (
            "gemini-2.5-flash",
            ReasoningConfig(effort="max"),
            {"includeThoughts": True, "thinkingBudget": -1},
        ),
        (
            "gemini-3-pro-preview",
            ReasoningConfig(effort="minimal"),
            {"includeThoughts": True, "thinkingLevel": "LOW"},
        ),
        (
            "gemini-3-flash",
            ReasoningConfig(effort="medium"),
            {"includeThoughts": True, "thinkingLevel": "HIGH"},
        ),
        (
            "gemini-3-pro",
            ReasoningConfig(enabled=True, include=False),
            {"includeThoughts": False, "thinkingBudget": -1},
        ),
    ],
)
def test_encode_thinking(model: str, cfg: ReasoningConfig, expected: dict[str, Any]) -> None:
    req = Request(model="m", messages=[Message("user", [Text("x")])], reasoning=cfg)
    assert gc.encode_request(req, model)["generationConfig"] == {"thinkingConfig": expected}


def _user(*parts: Part) -> list[Message]:
    return [Message("user", list(parts))]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (Request("m", _user(Text("x")), stop=list("abcdef")), "at most 5 stop sequences"),
        (
            Request("m", [Message("tool", [ToolResult("nope", [Text("x")])])]),
            "answers no earlier tool call",
        ),
        (Request("m", _user(Text("x")), tool_choice=ToolChoice("required")), "no tools"),
        (Request("m", _user(Image(data="AAAA"))), "needs a media type"),
        (Request("m", _user(Document())), "neither data nor url"),
        (Request("m", _user(ToolCall("c", "f", "{}"))), "only stand in an assistant"),
        (Request("m", [Message("assistant", [ToolResult("c")])]), "cannot stand in an assistant"),
        (Request("m", [Message("system", [Image(url="https://x/y.png")])]), "only text"),
        (Request("m", []), "no message"),
        (Request("m", [Message("assistant", [Reasoning("anthropic only", "sig")])]), "no message"),
        (
            Request("m", _user(Text("x")), reasoning=ReasoningConfig(effort="extreme")),
            "unknown reasoning effort",
        ),
        (Request("m", _user(Text("x")), n=0), "n must be at least 1"),
    ],
)
def test_encode_request_refuses(req: Request, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        gc.encode_request(req, "gemini-3-pro")


def test_encode_media_variants() -> None:
    req = Request(
        "m",
        _user(
            Image(url="https://x/a.webp"),
            Image(data="R0lGODlh"),
            Document(media_type="application/pdf", url="gs://b/f.pdf"),
            Document(data="JVBERi0xLjQ="),
        ),
    )
    assert gc.encode_request(req, "m")["contents"][0]["parts"] == [  # type: ignore[index]
        {"fileData": {"fileUri": "https://x/a.webp", "mimeType": "image/webp"}},
        {"inlineData": {"mimeType": "image/gif", "data": "R0lGODlh"}},
        {"fileData": {"fileUri": "gs://b/f.pdf", "mimeType": "application/pdf"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQ="}},
    ]


def test_sdk_body_round_trips_to_gemini() -> None:
    """A Gemini client's body, decoded and encoded again, keeps its meaning."""
    req = gc.decode_request(SDK_BODY, model="gemini-2.5-flash")
    body = wire(gc.encode_request(req, "gemini-2.5-flash"))
    again = gc.decode_request(body, model="gemini-2.5-flash")
    assert again == req


# ============================================================================ responses

RESPONSE_BODY = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "thinking…", "thought": True},
                    {"text": "Hello"},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": SIG,
                    },
                ],
            },
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [],
            "avgLogprobs": -0.1,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 5,
        "candidatesTokenCount": 2,
        "thoughtsTokenCount": 10,
        "totalTokenCount": 17,
        "cachedContentTokenCount": 3,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 5}],
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mockResp1",
}


def test_decode_response() -> None:
    resp = gc.decode_response(RESPONSE_BODY)
    assert (resp.id, resp.model) == ("mockResp1", "gemini-2.5-flash")
    assert resp.created > 1_700_000_000
    assert resp.choices == [
        Choice(
            0,
            Message(
                "assistant",
                [
                    Reasoning("thinking…"),
                    Text("Hello"),
                    ToolCall("call_mockResp1_0", "get_weather", '{"city":"Paris"}', SIG),
                ],
            ),
            "tool_calls",
        )
    ]
    assert resp.usage == Usage(
        input_tokens=5, output_tokens=12, cache_read_tokens=3, reasoning_tokens=10
    )


def test_encode_response() -> None:
    resp = Response(
        "r1",
        "gemini-x",
        [
            Choice(
                0,
                Message(
                    "assistant",
                    [
                        Reasoning("hmm", "gemini:" + SIG),
                        Text("Hi"),
                        ToolCall("call_1", "f", '{"a":1}', SIG2),
                    ],
                ),
                "tool_calls",
            )
        ],
        Usage(10, 7, cache_read_tokens=4, reasoning_tokens=3),
    )
    assert gc.encode_response(resp) == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "hmm", "thought": True, "thoughtSignature": SIG},
                        {"text": "Hi"},
                        {
                            "functionCall": {"name": "f", "args": {"a": 1}, "id": "call_1"},
                            "thoughtSignature": SIG2,
                        },
                    ],
                },
                "index": 0,
                "finishReason": "STOP",
            }
        ],
        "modelVersion": "gemini-x",
        "responseId": "r1",
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 4,
            "totalTokenCount": 17,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
        },
    }


@pytest.mark.parametrize(
    ("reason", "called", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "error"),
        ("OTHER", False, "stop"),
        ("LANGUAGE", False, "stop"),
        ("SOMETHING_NEW", False, "stop"),
        (None, True, "tool_calls"),
        (None, False, None),
    ],
)
def test_finish_reasons(reason: str | None, called: bool, expected: str | None) -> None:
    parts: list[dict[str, Any]] = [{"text": "x"}]
    if called:
        parts.append({"functionCall": {"id": "c", "name": "f", "args": {}}})
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if reason:
        cand["finishReason"] = reason
    assert gc.decode_response({"candidates": [cand]}).choices[0].finish_reason == expected


def test_decode_blocked_prompt_and_multiple_candidates() -> None:
    blocked = gc.decode_response(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}}
    )
    assert blocked.choices == [Choice(0, Message("assistant", []), "content_filter")]
    assert blocked.usage == Usage(input_tokens=4)
    two = gc.decode_response(
        {
            "candidates": [
                {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
                {
                    "content": {"parts": [{"text": "b"}, {"executableCode": {"code": "1"}}]},
                    "finishReason": "MAX_TOKENS",
                    "index": 1,
                },
            ]
        }
    )
    assert [(c.index, c.message.parts, c.finish_reason) for c in two.choices] == [
        (0, [Text("a")], "stop"),
        (1, [Text("b")], "length"),
    ]
    assert two.id.startswith("resp_")


@pytest.mark.parametrize(
    "body",
    [[], {"candidates": "x"}, {"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]}, {}],
)
def test_decode_response_malformed(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        gc.decode_response(body)


def test_foreign_reasoning_survives_a_gemini_client_round_trip() -> None:
    """Anthropic thinking shown to a Gemini client comes back intact when the client echoes it."""
    resp = Response(
        "r",
        "m",
        [
            Choice(
                0,
                Message(
                    "assistant",
                    [
                        Reasoning("anthropic thought", "EqQBCkgIARAB+/x="),
                        Reasoning("", redacted="opaque"),
                        Text("hi"),
                    ],
                ),
            )
        ],
    )
    body = wire(gc.encode_response(resp))
    parts = body["candidates"][0]["content"]["parts"]
    base64.b64decode(parts[0]["thoughtSignature"], validate=True)  # the SDK insists on base64
    # google-genai re-encodes bytes fields url-safe when it sends the history back.
    for p in parts:
        if "thoughtSignature" in p:
            raw = base64.b64decode(p["thoughtSignature"])
            p["thought_signature"] = base64.urlsafe_b64encode(raw).decode()
            del p["thoughtSignature"]
    req = gc.decode_request(
        {
            "contents": [
                {"role": "user", "parts": [{"text": "q"}]},
                {"role": "model", "parts": parts},
            ]
        },
        model="m",
    )
    assert req.messages[1].parts == resp.choices[0].message.parts


# ============================================================================ errors


@pytest.mark.parametrize(
    ("err", "status", "name"),
    [
        (InvalidRequest("bad"), 400, "INVALID_ARGUMENT"),
        (AuthenticationFailed("who"), 401, "UNAUTHENTICATED"),
        (QiaoError("x"), 500, "INTERNAL"),
        (NotFound("no model"), 404, "NOT_FOUND"),
        (UpstreamOverloaded("busy"), 503, "UNAVAILABLE"),
        (UpstreamTimeout("slow"), 504, "DEADLINE_EXCEEDED"),
        (UpstreamProtocolError("junk"), 502, "UNAVAILABLE"),
    ],
)
def test_error_body(err: QiaoError, status: int, name: str) -> None:
    assert gc.error_body(err) == (
        status,
        {"error": {"code": status, "message": err.message, "status": name}},
    )


def test_error_body_rate_limit_carries_retry_info() -> None:
    err = QiaoError("slow down", retry_after=30)
    err.status = 429
    assert gc.error_body(err) == (
        429,
        {
            "error": {
                "code": 429,
                "message": "slow down",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}
                ],
            }
        },
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}',
            "API key not valid.",
        ),
        (b'[{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}]', "Quota"),
        (b"<html>502</html>", None),
        (b'{"error":"x"}', None),
    ],
)
def test_error_message(body: bytes, message: str | None) -> None:
    assert gc.error_message(400, body) == message


# ============================================================================ stream decoding


def sse(*chunks: dict[str, Any], sep: bytes = b"\r\n\r\n") -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + sep for c in chunks)


def chunk(
    parts: list[dict[str, Any]], finish: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    out: dict[str, Any] = {
        "candidates": [cand],
        "modelVersion": "gemini-2.5-flash",
        "responseId": "rid7",
    }
    if usage:
        out["usageMetadata"] = usage
    return out


USAGE_1 = {"promptTokenCount": 12, "totalTokenCount": 12}
USAGE_END = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 9,
    "thoughtsTokenCount": 20,
    "totalTokenCount": 41,
}
SHORT = sse(chunk([{"text": "Hi"}], usage=USAGE_1), chunk([{"text": " there"}], "STOP", USAGE_END))
LONG = sse(
    chunk([{"text": "**Planning** the answer", "thought": True}], usage=USAGE_1),
    chunk([{"text": "", "thought": True, "thoughtSignature": SIG}], usage=USAGE_1),
    chunk([{"text": "The weather "}], usage=USAGE_1),
    chunk([{"text": "in Paris, "}], usage=USAGE_1),
    chunk([{"text": '中文 "quoted"\n'}], usage=USAGE_1),
    chunk(
        [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris", "days": [1, 2]}},
                "thoughtSignature": SIG2,
            },
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
        usage=USAGE_1,
    ),
    chunk([{"text": ""}], "STOP", USAGE_END),
)
LONG_EVENTS: list[Event] = [
    StreamStart("rid7", "gemini-2.5-flash"),
    ReasoningDelta("**Planning** the answer"),
    UsageEvent(Usage(input_tokens=12)),
    ReasoningDelta("", "gemini:" + SIG),
    TextDelta("The weather "),
    TextDelta("in Paris, "),
    TextDelta('中文 "quoted"\n'),
    ToolCallStart("call_rid7_0", "get_weather", 0, 0, SIG2),
    ToolCallDelta('{"city":"Paris","days":[1,2]}', 0),
    ToolCallStart("call_rid7_1", "get_time", 1, 0),
    ToolCallDelta("{}", 1),
    Finish("tool_calls"),
    UsageEvent(Usage(input_tokens=12, output_tokens=29, reasoning_tokens=20)),
]


def feed_split(data: bytes, cuts: list[int]) -> tuple[list[Event], gc.StreamDecoder]:
    dec = gc.StreamDecoder()
    events: list[Event] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        events.extend(dec.feed(data[prev:cut]))
        prev = cut
    for e in events:
        if isinstance(e, StreamStart):
            e.created = 0
    return events, dec


def test_stream_decoder_short_split_at_every_byte_boundary() -> None:
    whole, dec = feed_split(SHORT, [])
    assert whole == [
        StreamStart("rid7", "gemini-2.5-flash"),
        TextDelta("Hi"),
        UsageEvent(Usage(input_tokens=12)),
        TextDelta(" there"),
        Finish("stop"),
        UsageEvent(Usage(input_tokens=12, output_tokens=29, reasoning_tokens=20)),
    ]
    assert dec.done
    for cut in range(1, len(SHORT)):
        events, dec = feed_split(SHORT, [cut])
        assert events == whole, cut
        assert dec.done


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("sep", [b"\r\n\r\n", b"\n\n"])
def test_stream_decoder_long_at_awkward_boundaries(step: int, sep: bytes) -> None:
    data = LONG.replace(b"\r\n\r\n", sep)
    events, dec = feed_split(data, list(range(step, len(data), step)))
    assert events == LONG_EVENTS
    assert dec.done


def test_stream_decoder_not_done_until_every_candidate_finished() -> None:
    two = {
        "candidates": [
            {"content": {"parts": [{"text": "a"}]}, "index": 0, "finishReason": "STOP"},
            {"content": {"parts": [{"text": "b"}]}, "index": 1},
        ]
    }
    dec = gc.StreamDecoder()
    events = dec.feed(sse(two))
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("a", 0), TextDelta("b", 1)]
    assert not dec.done
    assert dec.feed(
        sse({"candidates": [{"content": {"parts": []}, "index": 1, "finishReason": "MAX_TOKENS"}]})
    ) == [Finish("length", 1)]
    assert dec.done
    assert gc.StreamDecoder().feed(b"") == [] and not gc.StreamDecoder().done


def test_stream_decoder_error_chunk() -> None:
    data = (
        sse(chunk([{"text": "partial"}]))
        + b'data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}\r\n\r\n'
    )
    events, dec = feed_split(data, [5, 40, 90])
    assert events[-1] == StreamError(
        "The model is overloaded.", 503, "service_unavailable_error", "UNAVAILABLE"
    )
    assert TextDelta("partial") in events
    assert not dec.done
    assert dec.feed(sse(chunk([{"text": "late"}]))) == []


def test_stream_decoder_blocked_prompt() -> None:
    dec = gc.StreamDecoder()
    events = dec.feed(
        sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "responseId": "b"})
    )
    assert events[1:] == [Finish("content_filter")]
    assert dec.done


@pytest.mark.parametrize(
    "data",
    [
        b"data: {not json\r\n\r\n",
        b"data: [1,2]\n\n",
        b'data: {"candidates":[{"content":{"parts":[{"text":1}]}}]}\n\n',
    ],
)
def test_stream_decoder_malformed(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        gc.StreamDecoder().feed(data)


def test_stream_decoder_ignores_comments_and_other_fields() -> None:
    data = b": keep-alive\r\n\r\nevent: x\r\nid: 1\r\n" + SHORT
    events, _ = feed_split(data, [3])
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("Hi"), TextDelta(" there")]


def test_stream_decoder_bounds_memory() -> None:
    dec = gc.StreamDecoder()
    with pytest.raises(UpstreamProtocolError, match="larger than the limit"):
        for _ in range(20):
            dec.feed(b"data: " + b"x" * (1024 * 1024))


# ============================================================================ stream encoding

STREAM_EVENTS: list[Event] = [
    StreamStart("resp-9", "gemini-x"),
    ReasoningDelta("Let me see. "),
    ReasoningDelta("", "gemini:" + SIG),
    TextDelta("Hel"),
    TextDelta("lo "),
    TextDelta("world"),
    ToolCallStart("call_1", "get_weather", 0, 0, SIG2),
    ToolCallDelta('{"ci', 0),
    ToolCallDelta('ty": "Paris"}', 0),
    ToolCallStart("call_2", "get_time", 1, 0),
    ToolCallDelta("", 1),
    Finish("tool_calls"),
    UsageEvent(Usage(input_tokens=11, output_tokens=25, reasoning_tokens=5, cache_read_tokens=2)),
]


def encode_stream(events: list[Event]) -> bytes:
    enc = gc.StreamEncoder(Request("gemini-x"))
    return b"".join(enc.feed(e) for e in events) + enc.close()


def frames(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\r\n\r\n")
    out = []
    for event in data.split(b"\r\n\r\n")[:-1]:
        assert event.startswith(b"data: ") and b"\n" not in event
        out.append(orjson.loads(event[6:]))
    return out


def test_stream_encoder_frames() -> None:
    got = frames(encode_stream(STREAM_EVENTS))
    parts = [f["candidates"][0]["content"]["parts"] for f in got]
    assert parts == [
        [{"text": "Let me see. ", "thought": True}],
        [{"text": "", "thought": True, "thoughtSignature": SIG}],
        [{"text": "Hel"}],
        [{"text": "lo "}],
        [{"text": "world"}],
        [
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"},
                "thoughtSignature": SIG2,
            }
        ],
        [{"functionCall": {"name": "get_time", "args": {}, "id": "call_2"}}],
    ]
    assert all(f["responseId"] == "resp-9" and f["modelVersion"] == "gemini-x" for f in got)
    assert all(
        "finishReason" not in f["candidates"][0] and "usageMetadata" not in f for f in got[:-1]
    )
    assert got[-1]["candidates"][0]["finishReason"] == "STOP"
    assert got[-1]["usageMetadata"] == {
        "promptTokenCount": 11,
        "candidatesTokenCount": 20,
        "totalTokenCount": 36,
        "thoughtsTokenCount": 5,
        "cachedContentTokenCount": 2,
    }


def test_stream_encoder_then_decoder_agree() -> None:
    events, dec = feed_split(encode_stream(STREAM_EVENTS), [])
    assert dec.done
    expected = [dataclasses.replace(e) for e in STREAM_EVENTS if not isinstance(e, ToolCallDelta)]
    got = [e for e in events if not isinstance(e, ToolCallDelta)]
    assert got == expected
    assert [e.arguments for e in events if isinstance(e, ToolCallDelta)] == [
        '{"city":"Paris"}',
        "{}",
    ]


def test_stream_encoder_empty_stream_still_finishes_and_close_is_idempotent() -> None:
    enc = gc.StreamEncoder(Request("m"))
    first = frames(enc.close())
    assert first[0]["candidates"] == [
        {"content": {"role": "model", "parts": []}, "index": 0, "finishReason": "STOP"}
    ]
    assert enc.close() == b"" and enc.feed(TextDelta("late")) == b""


def test_stream_encoder_fail() -> None:
    enc = gc.StreamEncoder(Request("m"))
    enc.feed(TextDelta("x"))
    out = enc.feed(StreamError("upstream went away", 502))
    assert (
        out
        == b'data: {"error":{"code":502,"message":"upstream went away","status":"UNAVAILABLE"}}\r\n\r\n'
    )
    assert enc.close() == b""


def test_stream_encoder_refuses_stray_arguments() -> None:
    with pytest.raises(UpstreamProtocolError):
        gc.StreamEncoder(Request("m")).feed(ToolCallDelta("{}", 0))


# ============================================================================ the google-genai SDK


class FakeGemini:
    """A loopback server answering google-genai with whatever the test put here."""

    def __init__(self) -> None:
        self.sse = b""
        self.json: dict[str, Any] = {}
        self.status = 200
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        if request.path.endswith(":streamGenerateContent"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(self.sse)
            await resp.write_eof()
            return resp
        return web.json_response(self.json, status=self.status)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"
        runner_box.append(runner)
        ready.set()

    thread = threading.Thread(
        target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True
    )
    thread.start()
    assert ready.wait(10)
    yield server
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def client(fake: FakeGemini) -> genai.Client:
    return genai.Client(
        api_key="x", http_options=gtypes.HttpOptions(base_url=fake.url, api_version="v1beta")
    )


def test_sdk_parses_the_stream(fake: FakeGemini) -> None:
    fake.sse = encode_stream(STREAM_EVENTS)
    sdk = client(fake)  # held: a collected client closes its connection pool
    chunks = list(sdk.models.generate_content_stream(model="gemini-x", contents="hi"))
    assert "".join(c.text or "" for c in chunks) == "Hello world"
    parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])]  # type: ignore[index,union-attr]
    thoughts = [p for p in parts if p.thought]
    assert thoughts[0].text == "Let me see. "
    assert thoughts[1].thought_signature == base64.b64decode(SIG)
    calls = [p for p in parts if p.function_call]
    assert [(p.function_call.name, p.function_call.args, p.function_call.id) for p in calls] == [  # type: ignore[union-attr]
        ("get_weather", {"city": "Paris"}, "call_1"),
        ("get_time", {}, "call_2"),
    ]
    assert calls[0].thought_signature == base64.b64decode(SIG2)
    last = chunks[-1]
    assert last.candidates[0].finish_reason == gtypes.FinishReason.STOP  # type: ignore[index]
    usage = last.usage_metadata
    assert usage is not None
    assert (
        usage.prompt_token_count,
        usage.candidates_token_count,
        usage.thoughts_token_count,
        usage.cached_content_token_count,
        usage.total_token_count,
    ) == (11, 20, 5, 2, 36)
    assert last.response_id == "resp-9" and last.model_version == "gemini-x"
    assert fake.bodies[-1]["contents"] == [{"parts": [{"text": "hi"}], "role": "user"}]


def test_sdk_raises_on_a_failed_stream(fake: FakeGemini) -> None:
    enc = gc.StreamEncoder(Request("m"))
    fake.sse = enc.feed(TextDelta("partial")) + enc.fail(StreamError("overloaded", 503))
    sdk = client(fake)
    with pytest.raises(genai_errors.APIError) as info:
        list(sdk.models.generate_content_stream(model="gemini-x", contents="hi"))
    assert info.value.code == 503 and info.value.status == "UNAVAILABLE"


def test_sdk_parses_the_response(fake: FakeGemini) -> None:
    resp = Response(
        "r-1",
        "gemini-x",
        [
            Choice(
                0,
                Message(
                    "assistant",
                    [
                        Reasoning("thinking", "gemini:" + SIG),
                        Text("Sunny "),
                        Text("today."),
                        ToolCall("call_9", "get_weather", '{"city":"Paris"}', SIG2),
                    ],
                ),
                "tool_calls",
            )
        ],
        Usage(input_tokens=7, output_tokens=9, reasoning_tokens=4),
    )
    fake.json = wire(gc.encode_response(resp))
    fake.status = 200
    sdk = client(fake)
    out = sdk.models.generate_content(
        model="gemini-x",
        contents="weather?",
        config=gtypes.GenerateContentConfig(
            thinking_config=gtypes.ThinkingConfig(include_thoughts=True)
        ),
    )
    assert out.text == "Sunny today."
    assert out.function_calls is not None
    assert out.function_calls[0].args == {"city": "Paris"} and out.function_calls[0].id == "call_9"
    assert out.response_id == "r-1"
    assert out.usage_metadata is not None
    assert (
        out.usage_metadata.prompt_token_count,
        out.usage_metadata.candidates_token_count,
        out.usage_metadata.thoughts_token_count,
        out.usage_metadata.total_token_count,
    ) == (7, 5, 4, 16)
    # what the SDK sends back next turn decodes to the same history
    history = [
        gtypes.Content(role="user", parts=[gtypes.Part(text="weather?")]),
        out.candidates[0].content,
    ]  # type: ignore[index,list-item]
    fake.json = wire(
        gc.encode_response(
            Response("r-2", "gemini-x", [Choice(0, Message("assistant", [Text("ok")]))])
        )
    )
    sdk.models.generate_content(model="gemini-x", contents=history)  # type: ignore[arg-type]
    req = gc.decode_request(fake.bodies[-1], model="gemini-x")
    assert req.messages[1].parts == resp.choices[0].message.parts
    # and the SDK's own request decodes
    assert req.messages[0] == Message("user", [Text("weather?")])


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (InvalidRequest("bad thing"), genai_errors.ClientError),
        (UpstreamOverloaded("busy"), genai_errors.ServerError),
    ],
)
def test_sdk_reads_error_body(fake: FakeGemini, err: QiaoError, kind: type[Exception]) -> None:
    fake.status, fake.json = gc.error_body(err)
    sdk = client(fake)
    with pytest.raises(kind) as info:
        sdk.models.generate_content(model="gemini-x", contents="hi")
    assert info.value.code == err.status and info.value.message == err.message  # type: ignore[attr-defined]
    fake.status = 200


# ============================================================================ round-trip properties

NAMES = st.sampled_from(["get_weather", "search", "lookup.v2", "a-b:c"])
B64 = st.binary(min_size=1, max_size=16).map(lambda b: base64.b64encode(b).decode())
JSON_OBJ = st.dictionaries(
    st.text(max_size=6),
    st.one_of(
        st.integers(-(10**6), 10**6),
        st.text(max_size=6),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    max_size=3,
).map(lambda d: orjson.dumps(d).decode())
PLAIN = st.text(
    alphabet=st.characters(blacklist_characters="{", blacklist_categories=["Cs"]), max_size=20
)
WORDS = st.text(min_size=1, max_size=20)


@st.composite
def assistant_message(draw: st.DrawFn, turn: int) -> Message:
    parts: list[Part] = []
    for n, kind in enumerate(
        draw(st.lists(st.sampled_from(["text", "reasoning", "call"]), min_size=1, max_size=5))
    ):
        if kind == "text":
            parts.append(Text(draw(WORDS)))
        elif kind == "reasoning":
            parts.append(Reasoning(draw(st.text(max_size=10)), "gemini:" + draw(B64)))
        else:
            parts.append(
                ToolCall(f"call_{turn}_{n}", draw(NAMES), draw(JSON_OBJ), draw(st.none() | B64))
            )
    return Message("assistant", parts)


@st.composite
def user_parts(draw: st.DrawFn) -> list[Part]:
    options = st.one_of(
        st.builds(Text, st.text(max_size=20)),
        B64.map(lambda d: Image(media_type="image/png", data=d)),
        st.just(Image(media_type="image/jpeg", url="https://example.com/cat")),
        B64.map(lambda d: Document(media_type="application/pdf", data=d)),
        st.text(max_size=10).map(lambda t: Document(media_type="text/plain", text=t)),
        st.just(Document(media_type="application/pdf", url="gs://bucket/file.pdf")),
    )
    return draw(st.lists(options, min_size=1, max_size=3))


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    messages = [Message("user", draw(user_parts()))]
    for turn in range(draw(st.integers(0, 3))):
        assistant = draw(assistant_message(turn))
        messages.append(assistant)
        calls = [p for p in assistant.parts if isinstance(p, ToolCall)]
        if calls:
            results: list[Part] = [
                ToolResult(c.id, [Text(draw(PLAIN | JSON_OBJ))], draw(st.booleans()), c.name)
                for c in calls
            ]
            messages.append(Message("tool", results))
            if draw(st.booleans()):
                messages.append(Message("user", draw(user_parts())))
        elif draw(st.booleans()):
            messages.append(Message("user", draw(user_parts())))
        else:
            break
    return messages


REASONING = st.sampled_from(
    [
        None,
        ReasoningConfig(enabled=False, include=False),
        ReasoningConfig(enabled=True, include=True),
        ReasoningConfig(budget_tokens=1024, include=True),
        ReasoningConfig(effort="low", include=False),
        ReasoningConfig(effort="high", include=True),
    ]
)
FORMATS = st.sampled_from(
    [None, ResponseFormat("json_object"), ResponseFormat("json_schema", {"type": "object"})]
)
FLOATS = st.none() | st.floats(0, 2, allow_nan=False)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    names = draw(st.lists(NAMES, unique=True, max_size=3))
    tools = [
        Tool(
            n,
            draw(st.none() | st.text(max_size=10)),
            {"type": "object", "properties": {"q": {"type": "string"}}},
        )
        for n in names
    ]
    choice = None
    if tools:
        mode = draw(st.sampled_from([None, "auto", "none", "required", "tool"]))
        choice = None if mode is None else ToolChoice(mode, names[0] if mode == "tool" else None)  # type: ignore[arg-type]
    stream = draw(st.booleans())
    return Request(
        model="gemini-3-pro",
        messages=draw(conversations()),
        system=[Text(t) for t in draw(st.lists(st.text(max_size=10), max_size=2))],
        tools=tools,
        tool_choice=choice,
        max_tokens=draw(st.none() | st.integers(1, 10**6)),
        temperature=draw(FLOATS),
        top_p=draw(FLOATS),
        top_k=draw(st.none() | st.integers(1, 100)),
        stop=draw(st.lists(st.text(min_size=1, max_size=5), max_size=5)),
        n=draw(st.integers(1, 4)),
        stream=stream,
        stream_usage=stream,
        seed=draw(st.none() | st.integers(-(2**31), 2**31 - 1)),
        presence_penalty=draw(FLOATS),
        frequency_penalty=draw(FLOATS),
        response_format=draw(FORMATS),
        reasoning=draw(REASONING),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_request_round_trip(req: Request) -> None:
    body = wire(gc.encode_request(req, req.model))
    assert gc.decode_request(body, model=req.model, stream=req.stream) == req


SIGNATURES = st.one_of(
    st.none(),
    B64.map(lambda s: "gemini:" + s),
    st.text(max_size=12).filter(lambda s: not s.startswith("gemini:")),
)


@st.composite
def answer(draw: st.DrawFn, index: int) -> Choice:
    parts: list[Part] = []
    for n, kind in enumerate(
        draw(st.lists(st.sampled_from(["text", "reasoning", "call"]), max_size=5))
    ):
        if kind == "text":
            parts.append(Text(draw(WORDS)))
        elif kind == "reasoning":
            parts.append(
                Reasoning(
                    draw(st.text(max_size=10)),
                    draw(SIGNATURES),
                    draw(st.none() | st.text(max_size=8)),
                )
            )
        else:
            parts.append(
                ToolCall(f"c{index}_{n}", draw(NAMES), draw(JSON_OBJ), draw(st.none() | B64))
            )
    called = any(isinstance(p, ToolCall) for p in parts)
    reasons = (
        ["tool_calls", "length", "content_filter"]
        if called
        else ["stop", "length", "content_filter", None]
    )
    return Choice(index, Message("assistant", parts), draw(st.sampled_from(reasons)))  # type: ignore[arg-type]


@st.composite
def responses(draw: st.DrawFn) -> Response:
    count = draw(st.integers(1, 3))
    usage = None
    if draw(st.booleans()):
        out = draw(st.integers(0, 10**6))
        usage = Usage(
            draw(st.integers(0, 10**6)),
            out,
            draw(st.integers(0, 1000)),
            0,
            draw(st.integers(0, out)),
        )
    rid = draw(st.text(alphabet="abcdefXYZ0123456789-_", min_size=1, max_size=12))
    return Response(
        rid, "gemini-3-pro", [draw(answer(i)) for i in range(count)], usage, created=123
    )


@settings(max_examples=300, deadline=None)
@given(responses())
def test_response_round_trip(resp: Response) -> None:
    back = gc.decode_response(wire(gc.encode_response(resp)))
    assert dataclasses.replace(back, created=123) == resp


# ============================================================================ embeddings


def f32(*values: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"input": "hi", "model": "text-embedding-3-small"},
            [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hi"}]}}],
        ),
        (
            {
                "input": ["a", "b"],
                "model": "x",
                "dimensions": 3,
                "encoding_format": "base64",
                "user": "u",
            },
            [
                {
                    "model": "models/gemini-embedding-001",
                    "content": {"parts": [{"text": "a"}]},
                    "outputDimensionality": 3,
                },
                {
                    "model": "models/gemini-embedding-001",
                    "content": {"parts": [{"text": "b"}]},
                    "outputDimensionality": 3,
                },
            ],
        ),
    ],
)
def test_embed_request_from_openai(body: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert gc.embed_request_from_openai(body, model="gemini-embedding-001") == {
        "requests": expected
    }
    assert emb.openai_to_gemini_request(body, "models/gemini-embedding-001") == {
        "requests": expected
    }


def test_embed_request_task_type() -> None:
    out = gc.embed_request_from_openai({"input": "q"}, model="e", task_type="RETRIEVAL_QUERY")
    assert out["requests"][0]["taskType"] == "RETRIEVAL_QUERY"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": [1, 2, 3]}, "token-id inputs"),
        ({"input": [[1, 2], [3]]}, "token-id inputs"),
        ({"input": []}, "non-empty"),
        ({"input": ["a", 1]}, "array of strings"),
        ({"input": "a", "dimensions": 0}, "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ("nope", "JSON object"),
    ],
)
def test_embed_request_from_openai_refuses(body: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        gc.embed_request_from_openai(body, model="e")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # what google-genai 3.6.1 sends, even for one input (protocols.md §1.3)
        (
            {
                "requests": [
                    {
                        "content": {"parts": [{"text": "hi"}], "role": "user"},
                        "taskType": "RETRIEVAL_DOCUMENT",
                        "outputDimensionality": 3,
                        "model": "models/gemini-embedding-001",
                    }
                ]
            },
            {
                "model": "text-embedding-3-small",
                "input": ["hi"],
                "encoding_format": "float",
                "dimensions": 3,
            },
        ),
        (
            {
                "content": {"parts": [{"text": "a"}, {"text": "b"}]},
                "task_type": "CLUSTERING",
                "title": "t",
            },
            {"model": "text-embedding-3-small", "input": ["a\nb"], "encoding_format": "float"},
        ),
    ],
)
def test_embed_request_to_openai(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert gc.embed_request_to_openai(body, model="text-embedding-3-small") == expected
    assert emb.gemini_to_openai_request(body, "text-embedding-3-small") == expected


@pytest.mark.parametrize(
    "body",
    [
        {
            "requests": [
                {"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "x"}}]}}
            ]
        },
        {
            "requests": [
                {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
                {"content": {"parts": [{"text": "b"}]}, "outputDimensionality": 4},
            ]
        },
        {"requests": []},
        {"requests": [{}]},
    ],
)
def test_embed_request_to_openai_refuses(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        gc.embed_request_to_openai(body, model="m")


def test_embed_response_to_openai_float_and_base64() -> None:
    gemini = {"embeddings": [{"values": [0.5, -1.25]}, {"values": [2.0, 0.0]}]}
    assert gc.embed_response_to_openai(gemini, model="m") == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.5, -1.25]},
            {"object": "embedding", "index": 1, "embedding": [2.0, 0.0]},
        ],
        "model": "m",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
    out = emb.gemini_to_openai_response(
        {"embedding": {"values": [0.5, -1.25]}, "usageMetadata": {"promptTokenCount": 2}},
        {"encoding_format": "base64"},
        "m",
    )
    assert out["data"] == [{"object": "embedding", "index": 0, "embedding": f32(0.5, -1.25)}]
    assert out["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_embed_response_from_openai_float_and_base64() -> None:
    openai = {
        "object": "list",
        "model": "m",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
        "data": [
            {"object": "embedding", "index": 1, "embedding": f32(2.0, 0.25)},
            {"object": "embedding", "index": 0, "embedding": [0.5, -1]},
        ],
    }
    assert gc.embed_response_from_openai(openai) == {
        "embeddings": [{"values": [0.5, -1.0]}, {"values": [2.0, 0.25]}]
    }
    assert emb.openai_to_gemini_response(
        openai, "batchEmbedContents"
    ) == gc.embed_response_from_openai(openai)
    one = {"data": [{"index": 0, "embedding": [1.5]}]}
    assert emb.openai_to_gemini_response(one, "embedContent") == {"embedding": {"values": [1.5]}}


@pytest.mark.parametrize(
    ("body", "batch"),
    [
        ({"data": [{"embedding": "!!"}]}, True),
        ({"data": [{"embedding": "AAA="}]}, True),
        ({"data": "x"}, True),
        ({"data": [{"embedding": [1]}, {"embedding": [2]}]}, False),
    ],
)
def test_embed_response_from_openai_malformed(body: dict[str, Any], batch: bool) -> None:
    with pytest.raises(UpstreamProtocolError):
        gc.embed_response_from_openai(body, batch=batch)


def test_public_names() -> None:
    assert sorted(gc.__all__) == [
        "StreamDecoder",
        "StreamEncoder",
        "decode_request",
        "decode_response",
        "embed_request_from_openai",
        "embed_request_to_openai",
        "embed_response_from_openai",
        "embed_response_to_openai",
        "encode_request",
        "encode_response",
        "error_body",
        "error_message",
    ]


SDK = "google-genai-sdk/3.6.1 gl-python/3.11.7"
FOLDED = {
    "requests": [
        {
            "model": "models/emb-gemini",
            "content": {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
            "taskType": "RETRIEVAL_DOCUMENT",
        }
    ]
}


def test_unfold_sdk_batch() -> None:
    out = emb.unfold_sdk_batch(FOLDED, "emb-gemini", "gemini-embedding-001", SDK)
    one = FOLDED["requests"][0]
    assert out == {
        "requests": [
            {**one, "content": {"role": "user", "parts": [{"text": "a"}]}},
            {**one, "content": {"role": "user", "parts": [{"text": "b"}]}},
        ]
    }


@pytest.mark.parametrize(
    ("body", "alias", "upstream", "client"),
    [
        (FOLDED, "emb-gemini", "gemini-embedding-001", "curl/8.5"),  # not the SDK
        (FOLDED, "embedder", "gemini-embedding-001", SDK),  # the SDK did not fold
        (FOLDED, "gemini-embedding-001", "gemini-embedding-001", SDK),
        (FOLDED, "emb-gemini", "gemini-embedding-2", SDK),  # it would fold there too
        ({"requests": FOLDED["requests"] * 2}, "emb-gemini", "text-embedding-3-small", SDK),
        (
            {"requests": [{"content": {"parts": [{"text": "a"}, {"inlineData": {}}]}}]},
            "emb-gemini",
            "gemini-embedding-001",
            SDK,
        ),
        ({"content": {"parts": [{"text": "a"}]}}, "emb-gemini", "gemini-embedding-001", SDK),
    ],
)
def test_unfold_sdk_batch_leaves_alone(body: Any, alias: str, upstream: str, client: str) -> None:
    assert emb.unfold_sdk_batch(body, alias, upstream, client) is None
