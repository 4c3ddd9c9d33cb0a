"""The OpenAI Chat Completions codec: SDK bodies, golden SSE transcripts split at awkward
boundaries, output parsed by the official openai SDK, round-trip properties, provider quirks,
and the refuse/drop rules."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from typing import Any, Literal, cast

import openai
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from qiao.canonical import (
    Choice,
    Document,
    Event,
    Finish,
    FinishReason,
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
)
from qiao.codecs import openai_chat as oc
from qiao.errors import InvalidRequest, NotFound, UpstreamOverloaded, UpstreamProtocolError

WEATHER: dict[str, Any] = {
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
WEATHER_TOOL = Tool("get_weather", "w", WEATHER["function"]["parameters"])


def roundtrip_json(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


# ============================================================================ decode_request


# The observed openai-python 3.57 bodies of protocols.md §1.1.
SDK_BODIES: list[tuple[dict[str, Any], Request]] = [
    (
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
            "max_completion_tokens": 50,
            "temperature": 0.2,
        },
        Request(
            "gpt-4o-mini",
            [Message("user", [Text("hi")])],
            system=[Text("sys")],
            max_tokens=50,
            temperature=0.2,
        ),
    ),
    (
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": True},
            "tools": [WEATHER],
        },
        Request(
            "gpt-4o-mini",
            [Message("user", [Text("hi")])],
            tools=[WEATHER_TOOL],
            stream=True,
            stream_usage=True,
        ),
    ),
    (
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what"},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": "data:image/png;base64,iVBORw0KGgo=",
                                "detail": "low",
                            },
                        },
                    ],
                }
            ],
        },
        Request(
            "gpt-4o-mini",
            [
                Message(
                    "user",
                    [
                        Text("what"),
                        Image(media_type="image/png", data="iVBORw0KGgo=", detail="low"),
                    ],
                )
            ],
        ),
    ),
]


@pytest.mark.parametrize(("body", "expected"), SDK_BODIES)
def test_decode_sdk_bodies(body: dict[str, Any], expected: Request) -> None:
    assert oc.decode_request(body) == expected


@pytest.mark.parametrize(("body", "expected"), SDK_BODIES)
def test_sdk_bodies_survive_encode_decode(body: dict[str, Any], expected: Request) -> None:
    wire = roundtrip_json(oc.encode_request(expected, expected.model))
    assert oc.decode_request(wire) == expected


# A multi-turn history: parallel tool calls, DeepSeek reasoning_content, a Gemini signature.
HISTORY: dict[str, Any] = {
    "model": "deepseek-v4-pro",
    "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
        {"role": "user", "content": "Weather in Paris and Rome?", "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Two cities: call twice.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    "extra_content": {"google": {"thought_signature": "sig=="}},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
        {"role": "system", "content": "answer in French"},
        {"role": "assistant", "content": "Paris 18, Rome 24."},
    ],
    "tools": [WEATHER],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning_effort": "high",
}
HISTORY_CANONICAL = Request(
    "deepseek-v4-pro",
    system=[Text("be brief")],
    messages=[
        Message("user", [Text("Weather in Paris and Rome?")], name="ann"),
        Message(
            "assistant",
            [
                Reasoning("Two cities: call twice."),
                ToolCall("call_1", "get_weather", '{"city":"Paris"}', signature="sig=="),
                ToolCall("call_2", "get_weather", '{"city": "Rome"}'),
            ],
        ),
        Message("tool", [ToolResult("call_1", [Text("18C")])]),
        Message("tool", [ToolResult("call_2", [Text("24C")])]),
        Message("system", [Text("answer in French")]),
        Message("assistant", [Text("Paris 18, Rome 24.")]),
    ],
    tools=[WEATHER_TOOL],
    tool_choice=ToolChoice("auto", parallel=True),
    reasoning=ReasoningConfig(enabled=True, effort="high"),
)


def test_decode_multi_turn_tool_history() -> None:
    assert oc.decode_request(HISTORY) == HISTORY_CANONICAL


def test_encode_multi_turn_tool_history() -> None:
    wire = oc.encode_request(HISTORY_CANONICAL, "deepseek-v4-pro")
    messages = wire["messages"]
    assert messages[0] == {"role": "system", "content": "be brief"}
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": HISTORY["messages"][2]["tool_calls"],
        "reasoning_content": "Two cities: call twice.",
    }
    assert messages[3:6] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
        {"role": "system", "content": "answer in French"},
    ]
    assert wire["tool_choice"] == "auto" and wire["parallel_tool_calls"] is True
    assert wire["reasoning_effort"] == "high"
    assert oc.decode_request(roundtrip_json(wire)) == HISTORY_CANONICAL


def test_decode_parameters() -> None:
    req = oc.decode_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 9,
            "stop": "END",
            "n": 2,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -1,
            "top_p": 1,
            "top_k": 40,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True},
            },
            "user": "u1",
            "safety_identifier": "s1",
            "metadata": {"k": "v"},
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": False,
        }
    )
    assert (req.max_tokens, req.stop, req.n, req.seed, req.top_k) == (9, ["END"], 2, 7, 40)
    assert (req.presence_penalty, req.frequency_penalty, req.top_p) == (0.5, -1.0, 1.0)
    assert req.response_format == ResponseFormat("json_schema", {"type": "object"}, "r", True)
    assert req.user == "s1" and req.metadata == {"k": "v"}
    assert req.tool_choice == ToolChoice("tool", "f", parallel=False)


def test_decode_overrides_and_max_completion_tokens_wins() -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    req = oc.decode_request({**body, "max_completion_tokens": 7}, model="b", stream=True)
    assert (req.model, req.stream, req.max_tokens) == ("b", True, 7)


def test_decode_parts_and_roles() -> None:
    req = oc.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "developer", "content": "later system"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                        {
                            "type": "file",
                            "file": {
                                "file_data": "data:application/pdf;base64,JVBERi0=",
                                "filename": "a.pdf",
                            },
                        },
                        {
                            "type": "text",
                            "text": "t",
                            "prompt_cache_breakpoint": {"mode": "explicit"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "refusal", "refusal": "no"},
                    ],
                    "reasoning": "vllm style",
                },
            ],
        }
    )
    assert req.system == []
    assert req.messages == [
        Message("user", [Text("first")]),
        Message("system", [Text("later system")]),
        Message(
            "user",
            [
                Image(url="https://x/y.png"),
                Document(media_type="application/pdf", data="JVBERi0=", title="a.pdf"),
                Text("t", cache=True),
            ],
        ),
        Message("assistant", [Reasoning("vllm style"), Text("a"), Text("no")]),
    ]


def test_decode_deprecated_functions_map_to_tools() -> None:
    req = oc.decode_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "f", "arguments": "{}"},
                },
                {"role": "function", "name": "f", "content": "done"},
            ],
            "functions": [{"name": "f", "parameters": {"type": "object"}}],
            "function_call": {"name": "f"},
        }
    )
    call = req.messages[1].parts[0]
    assert isinstance(call, ToolCall) and (call.name, call.arguments) == ("f", "{}")
    assert req.messages[2] == Message("tool", [ToolResult(call.id, [Text("done")], name="f")])
    assert req.tools == [Tool("f", parameters={"type": "object"})]
    assert req.tool_choice == ToolChoice("tool", "f")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"reasoning_effort": "low"}, ReasoningConfig(enabled=True, effort="low")),
        ({"reasoning_effort": "none"}, ReasoningConfig(enabled=False)),
        ({"enable_thinking": True, "thinking_budget": 2048}, ReasoningConfig(True, None, 2048)),
        ({"thinking": {"type": "disabled"}}, ReasoningConfig(enabled=False)),
        ({}, None),
    ],
)
def test_decode_reasoning_knobs(extra: dict[str, Any], expected: ReasoningConfig | None) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    assert oc.decode_request(body).reasoning == expected


BASE = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, None),  # an empty object asks for web search too
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}
                ]
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}
                ]
            },
            "messages[0].content[0].file",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png,raw"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [{"role": "assistant", "content": "x", "audio": {"id": "a"}}]},
            "messages[0].audio",
        ),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"model": ""}, "model"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": True}, "n"),
        ({"stop": ["a", 1]}, "stop"),
        ({"stream": "yes"}, "stream"),
        (
            {"tools": [{"type": "function", "function": {"description": "no name"}}]},
            "tools[0].function.name",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 3}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
    ],
)
def test_decode_refuses(extra: dict[str, Any], param: str | None) -> None:
    with pytest.raises(InvalidRequest) as info:
        oc.decode_request({**BASE, **extra})
    assert info.value.status == 400
    assert info.value.param == (param or next(iter(extra)))


def test_audio_input_message_is_clear() -> None:
    body = {**BASE, "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}
    with pytest.raises(InvalidRequest, match="audio input cannot be translated"):
        oc.decode_request(body)


@pytest.mark.parametrize(
    "extra",
    [
        {"store": True, "service_tier": "flex", "prompt_cache_key": "k", "verbosity": "low"},
        {"stream_options": {"include_usage": False, "include_obfuscation": False}},
        {"logprobs": False, "logit_bias": {}, "modalities": ["text"], "top_logprobs": None},
        {"min_p": 0.1, "repetition_penalty": 1.1, "chat_template_kwargs": {"x": 1}},
    ],
)
def test_decode_drops_harmless_and_unknown(extra: dict[str, Any]) -> None:
    assert oc.decode_request({**BASE, **extra}) == oc.decode_request(BASE)


def test_refuse_and_drop_tables_are_disjoint() -> None:
    assert not set(oc.REFUSED) & oc.DROPPED


# ============================================================================ encode_request


def test_encode_request_parameters() -> None:
    req = Request(
        "alias",
        [Message("user", [Text("a"), Text("b")])],
        system=[Text("s1"), Text("s2")],
        tools=[WEATHER_TOOL],
        tool_choice=ToolChoice("required", parallel=False),
        max_tokens=100,
        temperature=0.5,
        top_k=20,
        stop=["x"],
        n=2,
        stream=True,
        seed=1,
        response_format=ResponseFormat("json_object"),
        reasoning=ReasoningConfig(enabled=True, budget_tokens=10000),
        user="u",
        metadata={"user_id": "u"},
    )
    assert oc.encode_request(req, "up") == {
        "model": "up",
        "messages": [
            {"role": "system", "content": "s1\n\ns2"},
            {"role": "user", "content": "a\n\nb"},
        ],
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": ["x"],
        "n": 2,
        "top_k": 20,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "medium",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 100,
        "temperature": 0.5,
        "seed": 1,
        "user": "u",
    }


def test_encode_options_for_openai_itself() -> None:
    req = Request(
        "m",
        [Message("assistant", [Reasoning("hmm"), Text("ok")])],
        max_tokens=5,
        top_k=3,
        stream=True,
    )
    options = oc.EncodeOptions(
        "max_completion_tokens", reasoning_passback=False, top_k=False, stream_usage=False
    )
    wire = oc.encode_request(req, "o3", options)
    assert wire["max_completion_tokens"] == 5 and "max_tokens" not in wire
    assert "top_k" not in wire and "stream_options" not in wire
    assert wire["messages"] == [{"role": "assistant", "content": "ok"}]


@pytest.mark.parametrize(
    ("config", "effort"),
    [
        (ReasoningConfig(enabled=True), "medium"),
        (ReasoningConfig(enabled=True, budget_tokens=1024), "low"),
        (ReasoningConfig(enabled=True, budget_tokens=32000), "high"),
        (ReasoningConfig(enabled=True, effort="xhigh"), "xhigh"),
        (ReasoningConfig(enabled=False, effort="high"), None),
        (ReasoningConfig(include=False), None),
    ],
)
def test_encode_reasoning_effort(config: ReasoningConfig, effort: str | None) -> None:
    wire = oc.encode_request(Request("m", [Message("user", [Text("x")])], reasoning=config), "m")
    assert wire.get("reasoning_effort") == effort


def test_encode_tool_results_with_images_go_to_a_user_message() -> None:
    image = Image(media_type="image/png", data="iVBORw0KGgo=")
    req = Request(
        "m",
        [
            Message("assistant", [ToolCall("c1", "shot", "{}"), ToolCall("c2", "ls", "{}")]),
            Message("tool", [ToolResult("c1", [Text("here"), image])]),
            Message("tool", [ToolResult("c2", [Text("no such dir")], is_error=True)]),
            Message("user", [Text("thanks")]),
        ],
    )
    messages = oc.encode_request(req, "m")["messages"]
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool", "user", "user"]
    assert messages[1]["content"].startswith("here\n\n[1 attachment(s)")
    assert messages[2]["content"] == "Error: no such dir"
    assert messages[3]["content"] == [
        {"type": "text", "text": "Attachments of tool call c1:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]


def test_encode_documents_and_images() -> None:
    req = Request(
        "m",
        [
            Message(
                "user",
                [
                    Document(media_type="application/pdf", data="JVBERi0="),
                    Document(text="plain text doc"),
                    Image(url="https://x/y.png", detail="high"),
                ],
            )
        ],
    )
    assert oc.encode_request(req, "m")["messages"][0]["content"] == [
        {
            "type": "file",
            "file": {
                "file_data": "data:application/pdf;base64,JVBERi0=",
                "filename": "document.pdf",
            },
        },
        {"type": "text", "text": "plain text doc"},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
    ]


@pytest.mark.parametrize(
    "part",
    [Document(url="https://x/a.pdf"), Image(data="abc"), Image()],
)
def test_encode_refuses_what_chat_completions_cannot_carry(part: Part) -> None:
    req = Request("m", [Message("user", [Text("x"), part])])
    with pytest.raises(InvalidRequest):
        oc.encode_request(req, "m")


def test_encode_without_tools_sends_no_tool_choice() -> None:
    req = Request(
        "m", [Message("user", [Text("x")])], tool_choice=ToolChoice("none", parallel=False)
    )
    wire = oc.encode_request(req, "m")
    assert "tool_choice" not in wire and "parallel_tool_calls" not in wire


# ============================================================================ responses


TOOL_ANSWER = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "call_abc",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_x",
}
TOOL_ANSWER_CANONICAL = Response(
    "chatcmpl-abc",
    "gpt-4o-mini",
    [
        Choice(
            0,
            Message("assistant", [ToolCall("call_abc", "get_weather", '{"city":"Paris"}')]),
            "tool_calls",
        )
    ],
    Usage(9, 1),
    created=1700000000,
)


def test_decode_response_golden() -> None:
    assert oc.decode_response(TOOL_ANSWER) == TOOL_ANSWER_CANONICAL


def test_encode_response_golden() -> None:
    body = oc.encode_response(TOOL_ANSWER_CANONICAL)
    expected = {
        k: v for k, v in TOOL_ANSWER.items() if k not in ("service_tier", "system_fingerprint")
    }
    expected["usage"] = {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert body == expected


def test_encode_response_reasoning_signature_and_cache_write() -> None:
    resp = Response(
        "msg_1",
        "claude",
        [
            Choice(
                0,
                Message(
                    "assistant",
                    [
                        Reasoning("think", signature="opaque"),
                        Text("a"),
                        Text("b"),
                        ToolCall("t", "f", "{}", "gsig"),
                    ],
                ),
                "tool_calls",
            )
        ],
        Usage(10, 5, cache_read_tokens=2, cache_write_tokens=3, reasoning_tokens=1),
        created=5,
    )
    body = oc.encode_response(resp)
    message = body["choices"][0]["message"]
    assert body["id"] == "chatcmpl-msg_1"
    assert message["content"] == "ab" and message["reasoning_content"] == "think"
    assert message["tool_calls"][0]["extra_content"] == {"google": {"thought_signature": "gsig"}}
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 2, "cache_write_tokens": 3}
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1}
    # ... and a later request from this client carries the signature back.
    echoed = {**BASE, "messages": [{"role": "user", "content": "x"}, message]}
    call = oc.decode_request(roundtrip_json(echoed)).messages[1].parts[-1]
    assert isinstance(call, ToolCall) and call.signature == "gsig"


@pytest.mark.parametrize(
    ("message", "parts"),
    [
        ({"content": "hi", "reasoning_content": "r"}, [Reasoning("r"), Text("hi")]),
        ({"content": "hi", "reasoning": "r"}, [Reasoning("r"), Text("hi")]),
        (
            {
                "content": "hi",
                "reasoning": "r",
                "reasoning_details": [{"type": "reasoning.text", "text": "r"}],
            },
            [Reasoning("r"), Text("hi")],
        ),
        (
            {"content": "hi", "reasoning_details": [{"type": "reasoning.text", "text": "md"}]},
            [Reasoning("md"), Text("hi")],
        ),
        ({"content": "<think>\nplan\n</think>\n\nAnswer"}, [Reasoning("plan\n"), Text("Answer")]),
        ({"content": "  <think>x</think>y"}, [Reasoning("x"), Text("y")]),
        ({"content": "<think>unterminated"}, [Reasoning("unterminated")]),
        ({"content": "no <think>here</think>"}, [Text("no <think>here</think>")]),
        ({"content": "<thin"}, [Text("<thin")]),
        (
            {
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": {"a": "中"}},
                    }
                ],
            },
            [ToolCall("c", "f", '{"a":"中"}')],
        ),
        (
            {
                "content": [
                    {"type": "thinking", "thinking": [{"type": "text", "text": "t"}]},
                    {"type": "text", "text": "x"},
                ]
            },
            [Reasoning("t"), Text("x")],
        ),
        ({"content": "", "refusal": "I can't"}, [Text("I can't")]),
    ],
)
def test_decode_response_provider_quirks(message: dict[str, Any], parts: list[Part]) -> None:
    body = {
        "id": "1",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
        ],
    }
    assert oc.decode_response(body).choices[0].message.parts == parts


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 60},
                "completion_tokens_details": {"reasoning_tokens": 15},
            },
            Usage(100, 20, cache_read_tokens=60, reasoning_tokens=15),
        ),
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 20,
                "prompt_cache_hit_tokens": 64,
                "prompt_cache_miss_tokens": 36,
            },
            Usage(100, 20, cache_read_tokens=64),
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 8},
            Usage(10, 2, cache_read_tokens=8),
        ),  # Kimi
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "prompt_tokens_details": None,
                "completion_tokens_details": None,
            },
            Usage(10, 2),
        ),
    ],
)
def test_decode_response_usage(usage: dict[str, Any], expected: Usage) -> None:
    body = {"choices": [], "usage": usage}  # GLM sends no object/created
    assert oc.decode_response(body).usage == expected


@pytest.mark.parametrize(
    ("finish", "tool_calls", "expected"),
    [
        ("stop", False, "stop"),
        ("stop", True, "tool_calls"),  # Ollama
        ("function_call", False, "tool_calls"),
        ("length", False, "length"),
        ("sensitive", False, "content_filter"),
        ("weird", False, "stop"),
        (None, False, "stop"),
    ],
)
def test_decode_response_finish_reasons(
    finish: str | None, tool_calls: bool, expected: str
) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": "x"}
    if tool_calls:
        message["tool_calls"] = [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]
    body = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    assert oc.decode_response(body).choices[0].finish_reason == expected


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"error": {"message": "quota"}},
        {"choices": ["x"]},
        {"choices": [{"message": {"tool_calls": ["x"]}}]},
    ],
)
def test_decode_response_malformed(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        oc.decode_response(body)


# ============================================================================ errors


@pytest.mark.parametrize(
    ("err", "status", "payload"),
    [
        (
            InvalidRequest("bad", param="messages"),
            400,
            {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": None},
        ),
        (
            NotFound("no model", code="model_not_found"),
            404,
            {
                "message": "no model",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            },
        ),
        (
            UpstreamOverloaded("busy"),
            503,
            {
                "message": "busy",
                "type": "service_unavailable_error",
                "param": None,
                "code": "upstream_overloaded",
            },
        ),
    ],
)
def test_error_body(err: Any, status: int, payload: dict[str, Any]) -> None:
    assert oc.error_body(err) == (status, {"error": payload})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
            "Rate limit reached",
        ),
        (b'{"error":"model overloaded"}', "model overloaded"),
        (b'{"code":"InvalidParameter","message":"dashscope says no"}', "dashscope says no"),
        (b'[{"error":{"message":"in a list"}}]', "in a list"),
        (b"<html>502 Bad Gateway</html>", None),
        (b'{"error":{}}', None),
    ],
)
def test_error_message(body: bytes, message: str | None) -> None:
    assert oc.error_message(429, body) == message


# ============================================================================ StreamDecoder

HEAD = '"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini"'
START = StreamStart("chatcmpl-abc", "gpt-4o-mini", 1700000000)
DONE = "data: [DONE]\n\n"


def chunk(delta: str, finish: str = "null", index: int = 0, extra: str = "") -> str:
    choice = f'{{"index":{index},"delta":{delta},"logprobs":null,"finish_reason":{finish}}}'
    return "data: {" + HEAD + ',"choices":[' + choice + "]" + extra + "}\n\n"


ROLE = chunk('{"role":"assistant","content":""}')

TEXT = (
    ROLE
    + chunk('{"content":"Hel"}')
    + chunk('{"content":"lo \\u4e2d"}')
    + chunk("{}", '"stop"')
    + DONE
).encode()
TEXT_EVENTS: list[Event] = [START, TextDelta("Hel"), TextDelta("lo 中"), Finish("stop")]

GOLDEN: dict[str, tuple[str, list[Event], bool]] = {
    "tool call, fragmented arguments": (
        ROLE
        + chunk(
            '{"tool_calls":[{"index":0,"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":""}}]}'
        )
        + chunk('{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]}')
        + chunk('{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]}')
        + chunk("{}", '"tool_calls"')
        + DONE,
        [
            START,
            ToolCallStart("call_abc", "get_weather", 0, 0),
            ToolCallDelta('{"city":', 0, 0),
            ToolCallDelta('"Paris"}', 0, 0),
            Finish("tool_calls"),
        ],
        True,
    ),
    "two parallel tool calls": (
        ROLE
        + chunk(
            '{"tool_calls":[{"index":0,"id":"c0","type":"function","function":{"name":"a","arguments":"{\\"x\\":1}"}}]}'
        )
        + chunk(
            '{"tool_calls":[{"index":1,"id":"c1","type":"function","function":{"name":"b","arguments":""}}]}'
        )
        + chunk('{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}')
        + chunk("{}", '"tool_calls"')
        + DONE,
        [
            START,
            ToolCallStart("c0", "a", 0, 0),
            ToolCallDelta('{"x":1}', 0, 0),
            ToolCallStart("c1", "b", 1, 0),
            ToolCallDelta("{}", 1, 0),
            Finish("tool_calls"),
        ],
        True,
    ),
    "reasoning_content deltas": (
        chunk('{"role":"assistant","content":null,"reasoning_content":""}')
        + chunk('{"content":null,"reasoning_content":"Let me"}')
        + chunk('{"reasoning_content":" think"}')
        + chunk('{"content":"Hi","reasoning_content":null}')
        + chunk("{}", '"stop"')
        + DONE,
        [
            START,
            ReasoningDelta("Let me"),
            ReasoningDelta(" think"),
            TextDelta("Hi"),
            Finish("stop"),
        ],
        True,
    ),
    "vLLM reasoning and OpenRouter reasoning_details": (
        chunk('{"reasoning":"a"}')
        + chunk('{"reasoning":"b","reasoning_details":[{"type":"reasoning.text","text":"b"}]}')
        + chunk('{"reasoning_details":[{"type":"reasoning.text","text":"c"}]}')
        + chunk("{}", '"stop"')
        + DONE,
        [START, ReasoningDelta("a"), ReasoningDelta("b"), ReasoningDelta("c"), Finish("stop")],
        True,
    ),
    "n=2 interleaved": (
        ROLE
        + chunk('{"role":"assistant","content":""}', index=1)
        + chunk('{"content":"A"}')
        + chunk('{"content":"B"}', index=1)
        + chunk("{}", '"stop"')
        + chunk('{"content":"b"}', index=1)
        + chunk("{}", '"length"', index=1)
        + DONE,
        [
            START,
            TextDelta("A"),
            TextDelta("B", 1),
            Finish("stop"),
            TextDelta("b", 1),
            Finish("length", 1),
        ],
        True,
    ),
    "usage chunk": (
        chunk('{"role":"assistant","content":""}', extra=',"usage":null')
        + chunk('{"content":"x"}', extra=',"usage":null')
        + chunk("{}", '"stop"', extra=',"usage":null')
        + "data: {"
        + HEAD
        + ',"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,'
        '"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":1}}}\n\n'
        + DONE,
        [
            START,
            TextDelta("x"),
            Finish("stop"),
            UsageEvent(Usage(9, 2, cache_read_tokens=4, reasoning_tokens=1)),
        ],
        True,
    ),
    "Azure empty-choices first chunk": (
        'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
        '[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}\n\n'
        + chunk('{"role":"assistant","content":""}', extra=',"system_fingerprint":"fp"')
        + chunk('{"content":"ok"}')
        + "data: {"
        + HEAD
        + ',"choices":[{"index":0,"delta":{},"finish_reason":"stop",'
        '"content_filter_results":{}}]}\n\n' + DONE,
        [START, TextDelta("ok"), Finish("stop")],
        True,
    ),
    "OpenRouter mid-stream error chunk": (
        ": OPENROUTER PROCESSING\n\n"
        + ROLE
        + chunk('{"content":"par"}')
        + "data: {"
        + HEAD
        + ',"provider":"X","error":{"code":502,"message":"Provider disconnected"},'
        '"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}\n\n',
        [START, TextDelta("par"), StreamError("Provider disconnected", status=502)],
        False,
    ),
    "finish_reason error without an error object": (
        ROLE + chunk("{}", '"error"'),
        [START, StreamError("upstream stopped with an error", status=502)],
        False,
    ),
    "OpenAI error event": (
        'data: {"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}\n\n',
        [
            StreamError(
                "Rate limit reached", status=429, type="requests", code="rate_limit_exceeded"
            )
        ],
        False,
    ),
    "<think> tags split across chunks": (
        ROLE
        + chunk('{"content":"<th"}')
        + chunk('{"content":"ink>\\nLet me"}')
        + chunk('{"content":" think</th"}')
        + chunk('{"content":"ink>\\n\\nAnswer"}')
        + chunk('{"content":" <think>stays</think>"}')
        + chunk("{}", '"stop"')
        + DONE,
        [
            START,
            ReasoningDelta("Let me"),
            ReasoningDelta(" think"),
            TextDelta("Answer"),
            TextDelta(" <think>stays</think>"),
            Finish("stop"),
        ],
        True,
    ),
    "GLM object arguments, name after id, usage on the finish chunk": (
        chunk('{"tool_calls":[{"index":0,"id":"c","function":{"arguments":"{\\"a\\""}}]}')
        + chunk('{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":":1}"}}]}')
        + chunk(
            '{"tool_calls":[{"index":1,"id":"d","function":{"name":"g","arguments":{"k":"中"}}}]}'
        )
        + chunk(
            "{}",
            '"stop"',
            extra=',"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_cache_hit_tokens":2}',
        ),
        [
            START,
            ToolCallStart("c", "f", 0, 0),
            ToolCallDelta('{"a"', 0, 0),
            ToolCallDelta(":1}", 0, 0),
            ToolCallStart("d", "g", 1, 0),
            ToolCallDelta('{"k":"中"}', 1, 0),
            Finish("tool_calls"),
            UsageEvent(Usage(3, 4, cache_read_tokens=2)),
        ],
        False,
    ),
    "Gemini thought signature on a streamed call": (
        chunk(
            '{"tool_calls":[{"index":0,"id":"g1","type":"function","function":{"name":"f","arguments":"{}"},'
            '"extra_content":{"google":{"thought_signature":"SIG"}}}]}'
        )
        + chunk("{}", '"tool_calls"')
        + DONE,
        [
            START,
            ToolCallStart("g1", "f", 0, 0, signature="SIG"),
            ToolCallDelta("{}", 0, 0),
            Finish("tool_calls"),
        ],
        True,
    ),
}
GOLDEN_CRLF = {
    f"{name} (CRLF, keep-alive)": (
        ": keep-alive\r\n\r\n" + text.replace("\n", "\r\n"),
        events,
        done,
    )
    for name, (text, events, done) in GOLDEN.items()
    if name in ("tool call, fragmented arguments", "usage chunk")
}


def decode_in_pieces(data: bytes, cuts: list[int]) -> tuple[list[Event], bool]:
    decoder = oc.StreamDecoder()
    events: list[Event] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        events.extend(decoder.feed(data[prev:cut]))
        prev = cut
    return events, decoder.done


@pytest.mark.parametrize("cut", range(len(TEXT) + 1))
def test_text_stream_split_at_every_byte_boundary(cut: int) -> None:
    assert decode_in_pieces(TEXT, [cut]) == (TEXT_EVENTS, True)


def test_text_stream_fed_byte_by_byte() -> None:
    assert decode_in_pieces(TEXT, list(range(1, len(TEXT)))) == (TEXT_EVENTS, True)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 10_000])
@pytest.mark.parametrize("name", [*GOLDEN, *GOLDEN_CRLF])
def test_golden_transcripts_at_awkward_boundaries(name: str, step: int) -> None:
    text, expected, done = {**GOLDEN, **GOLDEN_CRLF}[name]
    data = text.encode()
    assert decode_in_pieces(data, list(range(step, len(data), step))) == (expected, done)


@pytest.mark.parametrize(
    "data",
    [
        b"data: {not json}\n\n",
        b"data: [1,2]\n\n",
        b'data: {"choices":{}}\n\n',
        b'data: {"choices":[{"index":-1}]}\n\n',
    ],
)
def test_malformed_chunks_raise(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        oc.StreamDecoder().feed(data)


def test_memory_is_bounded() -> None:
    decoder = oc.StreamDecoder()
    piece = b"x" * (1024 * 1024)
    decoder.feed(b"data: ")
    with pytest.raises(UpstreamProtocolError, match="larger than the limit"):
        for _ in range(oc.MAX_EVENT_BYTES // len(piece) + 2):
            decoder.feed(piece)


def test_done_without_trailing_blank_line_and_nothing_after() -> None:
    decoder = oc.StreamDecoder()
    assert decoder.feed(b"data: [DONE]\n") == [] and decoder.done
    assert decoder.feed(b'\ndata: {"choices":[{"index":0,"delta":{"content":"late"}}]}\n\n') == []


# ============================================================================ StreamEncoder


def encode_stream(
    request: Request, events: list[Event], *, fail: StreamError | None = None
) -> bytes:
    encoder = oc.StreamEncoder(request)
    out = b"".join(encoder.feed(e) for e in events)
    return out + (encoder.fail(fail) if fail else encoder.close())


def sse_payloads(data: bytes) -> list[Any]:
    events = [e for e in data.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    return [e[6:] if e == "data: [DONE]" else orjson.loads(e[6:]) for e in events]


def test_stream_encoder_chunk_shapes() -> None:
    request = Request("alias", stream=True, stream_usage=True)
    events: list[Event] = [
        StreamStart("msg_1", "claude-x", 1700000000),
        ReasoningDelta("hmm"),
        ReasoningDelta(signature="sig-only"),
        TextDelta("Hi"),
        ToolCallStart("toolu_1", "f", 0, signature="g"),
        ToolCallDelta('{"a":'),
        ToolCallDelta("1}"),
        Finish("tool_calls"),
        UsageEvent(Usage(5, 6)),
    ]
    payloads = sse_payloads(encode_stream(request, events))
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        ("chatcmpl-msg_1", 1700000000, "claude-x", "chat.completion.chunk")
    }
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "hmm"},
        {"content": "Hi"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                    "extra_content": {"google": {"thought_signature": "g"}},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 11


def test_stream_encoder_without_usage_has_no_usage_key() -> None:
    payloads = sse_payloads(
        encode_stream(Request("m"), [TextDelta("x"), Finish("stop"), UsageEvent(Usage(1, 1))])
    )
    assert payloads[-1] == "[DONE]" and len(payloads) == 4
    assert all("usage" not in p for p in payloads[:-1])


def test_stream_encoder_fail_is_an_error_event_and_the_end() -> None:
    encoder = oc.StreamEncoder(Request("m"))
    encoder.feed(TextDelta("x"))
    out = encoder.fail(StreamError("boom", status=502, code="upstream_error"))
    assert (
        out
        == b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":"upstream_error"}}\n\n'
    )
    assert encoder.feed(TextDelta("more")) == b"" and encoder.close() == b""


# ---------------------------------------------------------------------------- the real SDK


class Upstream:
    """A tiny aiohttp server on 127.0.0.1 (background thread) replying with set bytes."""

    def __init__(self) -> None:
        self.status = 200
        self.content_type = "application/json"
        self.body = b"{}"
        self.seen: list[Any] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def reply(self, body: bytes, content_type: str = "application/json", status: int = 200) -> None:
        self.body, self.content_type, self.status = body, content_type, status

    def __enter__(self) -> Upstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append(await request.json())
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(scope="module")
def client(upstream: Upstream) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{upstream.port}/v1",
        api_key="x",
        max_retries=0,
        _strict_response_validation=True,
    )


HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
WEATHER_PARAM = cast(ChatCompletionToolParam, WEATHER)


def test_sdk_stream_text_and_tool_calls(upstream: Upstream, client: openai.OpenAI) -> None:
    events: list[Event] = [
        StreamStart("abc", "gpt-x", 1700000000),
        TextDelta("Hel"),
        TextDelta("lo"),
        ToolCallStart("call_1", "get_weather", 0),
        ToolCallDelta('{"city":'),
        ToolCallDelta('"Paris"}'),
        ToolCallStart("call_2", "get_weather", 1),
        ToolCallDelta('{"city":"Rome"}', call_index=1),
        Finish("tool_calls"),
    ]
    upstream.reply(encode_stream(Request("gpt-x", stream=True), events), "text/event-stream")
    with client.chat.completions.stream(
        model="gpt-x", messages=HI, tools=[WEATHER_PARAM]
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert final.id == "chatcmpl-abc" and final.model == "gpt-x"
    assert choice.message.content == "Hello" and choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}'),
        ("call_2", "get_weather", '{"city":"Rome"}'),
    ]
    # And the SDK's own streaming request decodes as the canonical request it means.
    seen = oc.decode_request(upstream.seen[-1])
    assert (
        seen.stream
        and seen.tools == [WEATHER_TOOL]
        and seen.messages == [Message("user", [Text("hi")])]
    )


def test_sdk_stream_n2_interleaved_and_reasoning(upstream: Upstream, client: openai.OpenAI) -> None:
    events: list[Event] = [
        StreamStart("n2", "m", 1),
        TextDelta("B", 1),
        ReasoningDelta("r"),
        TextDelta("A"),
        TextDelta("b", 1),
        Finish("tool_calls", 1),
        Finish("stop"),
    ]
    upstream.reply(encode_stream(Request("m", n=2, stream=True), events), "text/event-stream")
    with client.chat.completions.stream(model="m", messages=HI, n=2) as stream:
        final = stream.get_final_completion()
    assert [(c.index, c.message.content, c.finish_reason) for c in final.choices] == [
        (0, "A", "stop"),
        (1, "Bb", "tool_calls"),
    ]
    assert (final.choices[0].message.model_extra or {}).get("reasoning_content") == "r"


def test_sdk_stream_include_usage(upstream: Upstream, client: openai.OpenAI) -> None:
    events: list[Event] = [
        StreamStart("u", "m", 1),
        TextDelta("x"),
        Finish("stop"),
        UsageEvent(Usage(9, 2, 4, 0, 1)),
    ]
    upstream.reply(
        encode_stream(Request("m", stream=True, stream_usage=True), events), "text/event-stream"
    )
    chunks = list(
        client.chat.completions.create(
            model="m", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    ) == (9, 2, 11)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 4
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 1
    assert oc.decode_request(upstream.seen[-1]).stream_usage


def test_sdk_raises_on_fail(upstream: Upstream, client: openai.OpenAI) -> None:
    data = encode_stream(
        Request("m", stream=True), [TextDelta("par")], fail=StreamError("upstream broke", 502)
    )
    upstream.reply(data, "text/event-stream")
    with pytest.raises(openai.APIError, match="upstream broke"):
        with client.chat.completions.stream(model="m", messages=HI) as stream:
            stream.get_final_completion()


@pytest.mark.parametrize(
    "response",
    [
        TOOL_ANSWER_CANONICAL,
        Response(
            "x",
            "m",
            [
                Choice(0, Message("assistant", [Reasoning("why"), Text("A")]), "stop"),
                Choice(
                    1, Message("assistant", [Text("B"), ToolCall("c", "f", "{}", "s")]), "length"
                ),
            ],
            Usage(3, 4, 1, 2, 1),
            created=1,
        ),
        Response("y", "m", [Choice(0, Message("assistant", []), None)]),
    ],
)
def test_sdk_parses_encode_response(
    upstream: Upstream, client: openai.OpenAI, response: Response
) -> None:
    upstream.reply(orjson.dumps(oc.encode_response(response)))
    completion = client.chat.completions.create(model="m", messages=HI)
    assert completion.id.startswith("chatcmpl-") and len(completion.choices) == len(
        response.choices
    )
    assert oc.decode_response(completion.model_dump()) == oc.decode_response(
        oc.encode_response(response)
    )


def test_sdk_error_body(upstream: Upstream, client: openai.OpenAI) -> None:
    status, body = oc.error_body(InvalidRequest("bad thing", param="messages"))
    upstream.reply(orjson.dumps(body), status=status)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=HI)
    assert info.value.param == "messages" and "bad thing" in info.value.message


# ============================================================================ properties

names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_-]{0,15}", fullmatch=True)
texts = st.text(max_size=20)
# Non-empty, and not a "<think>" block (a leading one is reasoning in answers, by design).
said = st.text(min_size=1, max_size=20).filter(lambda s: not s.lstrip().startswith("<think>"))
b64 = st.binary(min_size=1, max_size=12).map(lambda b: base64.b64encode(b).decode())
json_args = st.dictionaries(names, st.integers(-(2**53), 2**53) | texts, max_size=3).map(
    lambda d: orjson.dumps(d).decode()
)
signatures = st.none() | said
details = st.none() | st.sampled_from(["low", "high", "auto"])
images = st.builds(
    Image, media_type=st.sampled_from(["image/png", "image/webp"]), data=b64, detail=details
) | st.builds(Image, url=st.sampled_from(["https://e.com/a.png", "http://x/y.jpg"]), detail=details)
documents = st.builds(Document, media_type=st.just("application/pdf"), data=b64, title=said)
MODES: tuple[Literal["auto", "none", "required", "tool"], ...] = (
    "auto",
    "none",
    "required",
    "tool",
)
ENDINGS: tuple[FinishReason, ...] = ("stop", "length", "content_filter")
tool_calls = st.builds(ToolCall, id=names, name=names, arguments=json_args, signature=signatures)


@st.composite
def users(draw: st.DrawFn) -> Message:
    if draw(st.booleans()):
        parts: list[Part] = [Text(draw(texts))]
    else:
        leaves = st.lists(texts.map(Text) | images | documents, min_size=1, max_size=4)
        parts = list[Part](draw(leaves.filter(lambda ps: any(not isinstance(p, Text) for p in ps))))
    return Message("user", parts, name=draw(st.none() | names))


@st.composite
def assistants(draw: st.DrawFn, named: bool = True) -> Message:
    parts: list[Part] = []
    if draw(st.booleans()):
        parts.append(Reasoning(draw(said)))
    if draw(st.booleans()):
        parts.append(Text(draw(said)))
    parts.extend(draw(st.lists(tool_calls, max_size=2)))
    return Message("assistant", parts, name=draw(st.none() | names) if named else None)


tool_messages = st.builds(lambda i, t: Message("tool", [ToolResult(i, [Text(t)])]), names, texts)
system_messages = texts.map(lambda t: Message("system", [Text(t)]))
tools = st.builds(
    Tool,
    name=names,
    description=st.none() | texts,
    parameters=st.just({"type": "object", "properties": {"q": {"type": "string"}}}),
    strict=st.none() | st.booleans(),
)
numbers = st.none() | st.floats(-2, 2, allow_nan=False)
formats = (
    st.none()
    | st.sampled_from([ResponseFormat("text"), ResponseFormat("json_object")])
    | st.builds(
        ResponseFormat,
        type=st.just("json_schema"),
        schema=st.none() | st.just({"type": "object"}),
        name=names,
        strict=st.none() | st.booleans(),
    )
)
efforts = st.none() | st.sampled_from(["low", "medium", "high"]).map(
    lambda e: ReasoningConfig(True, e)
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """Requests restricted to what chat.completions can say: no cache marks, no metadata,
    one text per text-only input message, a first message that is not a system one."""
    rest = st.lists(users() | assistants() | tool_messages | system_messages, max_size=5)
    declared = draw(st.lists(tools, max_size=2))
    choice = None
    if declared:
        mode = draw(st.sampled_from(MODES))
        choice = draw(
            st.none()
            | st.just(
                ToolChoice(
                    mode,
                    declared[0].name if mode == "tool" else None,
                    draw(st.none() | st.booleans()),
                )
            )
        )
    stream = draw(st.booleans())
    return Request(
        model=draw(names),
        system=draw(st.lists(texts.map(Text), max_size=1)),
        messages=[draw(users()), *draw(rest)],
        tools=declared,
        tool_choice=choice,
        max_tokens=draw(st.none() | st.integers(1, 10**6)),
        temperature=draw(numbers),
        top_p=draw(numbers),
        top_k=draw(st.none() | st.integers(0, 100)),
        stop=draw(st.lists(said, max_size=4)),
        n=draw(st.integers(1, 4)),
        stream=stream,
        stream_usage=stream,
        seed=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        presence_penalty=draw(numbers),
        frequency_penalty=draw(numbers),
        response_format=draw(formats),
        reasoning=draw(efforts),
        user=draw(st.none() | said),
    )


@settings(max_examples=300, deadline=None)
@given(requests())
def test_request_encode_decode_roundtrip(request: Request) -> None:
    wire = roundtrip_json(oc.encode_request(request, request.model))
    assert oc.decode_request(wire) == request


usages = st.none() | st.builds(Usage, *[st.integers(0, 10**6)] * 5)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    choices = []
    for i in range(draw(st.integers(1, 3))):
        message = draw(assistants(named=False))
        has_calls = any(isinstance(p, ToolCall) for p in message.parts)
        finish = "tool_calls" if has_calls else draw(st.sampled_from(ENDINGS))
        choices.append(Choice(i, message, finish))
    return Response(
        "chatcmpl-" + draw(names),
        draw(names),
        choices,
        draw(usages),
        created=draw(st.integers(1, 2**31)),
    )


@settings(max_examples=300, deadline=None)
@given(responses())
def test_response_encode_decode_roundtrip(response: Response) -> None:
    assert oc.decode_response(roundtrip_json(oc.encode_response(response))) == response


plain = st.text(alphabet='abc xyz中é{}"', min_size=1, max_size=8).filter(
    lambda s: not s[0].isspace()
)


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[int, list[Event]]:
    """Content events of n choices, interleaved, each choice ending with its Finish."""
    n = draw(st.integers(1, 3))
    per_choice: list[list[Event]] = []
    for index in range(n):
        events: list[Event] = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["text", "reasoning"]))
            events.append(
                TextDelta(draw(plain), index)
                if kind == "text"
                else ReasoningDelta(draw(plain), index=index)
            )
        calls = draw(st.integers(0, 2))
        for k in range(calls):
            events.append(ToolCallStart(draw(names), draw(names), k, index, draw(signatures)))
            events.extend(ToolCallDelta(a, k, index) for a in draw(st.lists(plain, max_size=3)))
        finish = "tool_calls" if calls else draw(st.sampled_from(ENDINGS))
        per_choice.append([*events, Finish(finish, index)])
    merged: list[Event] = []
    while any(per_choice):
        queue = draw(st.sampled_from([q for q in per_choice if q]))
        merged.append(queue.pop(0))
    return n, merged


@settings(max_examples=200, deadline=None)
@given(event_streams(), usages, st.integers(1, 13))
def test_stream_encode_decode_roundtrip(
    stream: tuple[int, list[Event]], usage: Usage | None, step: int
) -> None:
    n, events = stream
    start = StreamStart("chatcmpl-p", "m", 42)
    tail: list[Event] = [] if usage is None else [UsageEvent(usage)]
    data = encode_stream(Request("m", n=n, stream=True, stream_usage=True), [start, *events, *tail])
    assert decode_in_pieces(data, list(range(step, len(data), step))) == (
        [start, *events, *tail],
        True,
    )


def test_done_without_finish_releases_held_content() -> None:
    data = (
        chunk('{"content":"<thi"}')
        + chunk('{"tool_calls":[{"index":0,"id":"c","function":{"arguments":"{}"}}]}')
        + DONE
    ).encode()
    assert decode_in_pieces(data, []) == (
        [START, TextDelta("<thi"), ToolCallStart("c", "", 0, 0), ToolCallDelta("{}", 0, 0)],
        True,
    )
