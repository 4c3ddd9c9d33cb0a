"""The Anthropic Messages codec (qiao.codecs.anthropic): requests, answers, streams and errors,
in both roles. SSE is checked against golden transcripts and against the official SDK."""

from __future__ import annotations

import asyncio
import base64
import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from qiao.canonical import (
    Choice,
    Document,
    Event,
    Finish,
    Image,
    Message,
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
from qiao.codecs import anthropic as codec
from qiao.codecs.anthropic.request_decode import DROPPED_FIELDS
from qiao.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QiaoError,
    Unavailable,
    UpstreamConnectError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamTimeout,
)

GOLDEN = Path(__file__).parent / "golden"
Json = dict[str, Any]


def spelled_out(body: Json) -> Json:
    """Anthropic's shorthands written out: string content/system -> one text block."""
    out = copy.deepcopy(body)
    if isinstance(out.get("system"), str):
        out["system"] = [{"type": "text", "text": out["system"]}]
    for msg in out["messages"]:
        if isinstance(msg["content"], str):
            msg["content"] = [{"type": "text", "text": msg["content"]}]
        for block in msg["content"]:
            if block["type"] == "tool_result" and isinstance(block.get("content"), str):
                block["content"] = [{"type": "text", "text": block["content"]}]
    return out


# ============================================================================ requests: SDK bodies

WEATHER = {
    "name": "get_weather",
    "description": "w",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
SDK_PLAIN = {
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
    "model": "claude-sonnet-4-5",
    "stop_sequences": ["END"],
    "system": "sys",
    "temperature": 0.2,
}
SDK_TOOLS = {
    "max_tokens": 100, "model": "claude-sonnet-4-5", "tool_choice": {"type": "auto"}, "tools": [WEATHER],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "what"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ],
}  # fmt: skip
SDK_THINKING = {
    "max_tokens": 2048,
    "messages": [{"role": "user", "content": "Is 1001 prime?"}],
    "model": "claude-sonnet-4-5",
    "tools": [WEATHER],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stream": True,
}


@pytest.mark.parametrize(
    "body", [SDK_PLAIN, SDK_TOOLS, SDK_THINKING], ids=["plain", "tools", "thinking"]
)
def test_sdk_bodies_survive_decode_then_encode(body: Json) -> None:
    assert codec.encode_request(codec.decode_request(body), body["model"]) == spelled_out(body)


def test_sdk_tools_body_decodes_to_canonical() -> None:
    req = codec.decode_request(SDK_TOOLS)
    assert [m.role for m in req.messages] == ["user", "assistant", "tool"]
    assert req.messages[0].parts[1:] == [
        Image(media_type="image/png", data="iVBORw0KGgo="),
        Image(url="https://example.com/a.png"),
    ]
    assert req.messages[1].parts == [ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')]
    assert req.messages[2].parts == [ToolResult("toolu_1", [Text("sunny")], name="get_weather")]
    assert req.tools == [Tool("get_weather", "w", WEATHER["input_schema"])]
    assert req.tool_choice == ToolChoice("auto")


def test_model_and_stream_arguments_override_the_body() -> None:
    req = codec.decode_request(SDK_PLAIN, model="alias", stream=True)
    assert (req.model, req.stream, req.stream_usage) == ("alias", True, True)


# ============================================================================ requests: Claude Code

CC_TOOL_NAMES = [
    "Agent",
    "Bash",
    "CronCreate",
    "Edit",
    "Glob",
    "Grep",
    "NotebookEdit",
    "Read",
    "TodoWrite",
    "WebFetch",
    "WebSearch",
    "Write",
]
CC_TOOLS = [
    {
        "name": name,
        "description": f"Use the {name} tool. " * 40,
        "input_schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": False,
            "required": ["command"],
            "properties": {
                "command": {"type": "string", "description": "what to run"},
                "timeout": {"type": "number", "maximum": 600000},
                "options": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {f"k{i}": {"type": ["string", "null"]} for i in range(12)},
                    },
                },
            },
        },
    }
    for name in CC_TOOL_NAMES
]
CC_USER_ID = '{"device_id":"f4ca0e1d","account_uuid":"","session_id":"86d4f21e-1c2b"}'
CC_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds2VyB4fOhOsLz4Q=="
CLAUDE_CODE = {
    "model": "claude-opus-4-8", "max_tokens": 64000, "stream": True,
    "thinking": {"type": "adaptive"}, "output_config": {"effort": "high"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "metadata": {"user_id": CC_USER_ID},
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.123; cc_entrypoint=sdk-cli;"},
        {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "# Environment\nWorking directory: /w", "cache_control": {"type": "ephemeral"}},
    ],
    "tools": CC_TOOLS,
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAs you answer, use the tools.\n</system-reminder>"},
            {"type": "text", "text": "list the files", "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": "Available agent types for the Agent tool: general-purpose"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should run ls.", "signature": CC_SIGNATURE},
            {"type": "text", "text": "Listing."},
            {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls", "timeout": 1000}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "README.md\nqiao"}]},
            {"type": "text", "text": "now read the README", "cache_control": {"type": "ephemeral"}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_02", "name": "Read", "input": {"command": "/w/README.md"}},
            {"type": "tool_use", "id": "toolu_03", "name": "Read", "input": {"command": "/w/missing"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_02", "content": "# Qiao 桥"},
            {"type": "tool_result", "tool_use_id": "toolu_03", "content": "File does not exist.", "is_error": True}]},
    ],
}  # fmt: skip


def test_claude_code_request_decodes_to_canonical() -> None:
    req = codec.decode_request(CLAUDE_CODE)
    assert req.system == [  # the billing header is dropped
        Text("You are a Claude agent, built on Anthropic's Claude Agent SDK.", cache=True),
        Text("# Environment\nWorking directory: /w", cache=True),
    ]
    assert [m.role for m in req.messages] == [
        "user",
        "system",
        "assistant",
        "tool",
        "user",
        "assistant",
        "tool",
        "tool",
    ]
    assert req.messages[0].parts[1] == Text("list the files", cache=True)
    assert req.messages[1].parts == [
        Text("Available agent types for the Agent tool: general-purpose")
    ]
    assert req.messages[2].parts[0] == Reasoning("I should run ls.", signature=CC_SIGNATURE)
    assert req.messages[3].parts == [ToolResult("toolu_01", [Text("README.md\nqiao")], name="Bash")]
    assert req.messages[7].parts == [
        ToolResult("toolu_03", [Text("File does not exist.")], is_error=True, name="Read")
    ]
    assert req.reasoning == ReasoningConfig(enabled=True, effort="high")
    assert (req.user, req.max_tokens, req.stream) == (CC_USER_ID, 64000, True)
    assert [t.parameters for t in req.tools] == [t["input_schema"] for t in CC_TOOLS]


def test_claude_code_request_survives_decode_then_encode() -> None:
    body = codec.encode_request(codec.decode_request(CLAUDE_CODE), "claude-opus-4-8")
    expected = spelled_out(CLAUDE_CODE)
    assert body["messages"] == expected["messages"]
    assert body["system"] == expected["system"][1:]
    assert body["tools"] == CC_TOOLS
    assert body["metadata"] == CLAUDE_CODE["metadata"]
    assert (body["max_tokens"], body["stream"]) == (64000, True)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}  # effort high -> budget
    assert "context_management" not in body and "output_config" not in body


# ============================================================================ requests: rules

BASE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


def user_blocks(*blocks: Json) -> Json:
    return {"messages": [{"role": "user", "content": list(blocks)}]}


# fmt: off
@pytest.mark.parametrize(("change", "param"), [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": "100"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"model": 5}, "model"),
    ({"messages": {"role": "user"}}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user"}]}, "messages[0].content"),
    (user_blocks({"type": "text"}), "messages[0].content[0].text"),
    (user_blocks({"type": "tool_use", "id": "t", "name": "f", "input": {}}), "messages[0].content[0].type"),
    (user_blocks({"type": "web_search_tool_result", "tool_use_id": "s", "content": []}), "messages[0].content[0].type"),
    (user_blocks({"type": "image", "source": {"type": "file", "file_id": "file_1"}}), "messages[0].content[0].source.type"),
    (user_blocks({"type": "image", "source": {"type": "base64", "data": "AA=="}}), "messages[0].content[0].source.media_type"),
    (user_blocks({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "tool_reference", "tool_name": "x"}]}), "messages[0].content[0].content[0].type"),
    ({"system": [{"type": "image", "source": {"type": "url", "url": "https://x"}}]}, "system[0].type"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}, "tools[0].type"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}, "mcp_servers"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
    ({"output_config": {"effort": 3}}, "output_config.effort"),
    ({"temperature": "hot"}, "temperature"),
    ({"stop_sequences": ["END", 3]}, "stop_sequences[1]"),
    ({"metadata": {"user_id": 42}}, "metadata.user_id"),
    ({"stream": "yes"}, "stream"),
])
def test_decode_request_refuses_with_the_param(change: Json, param: str) -> None:
    body = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(InvalidRequest) as info:
        codec.decode_request(body)
    assert info.value.param == param
    assert info.value.message.startswith(f"{param}: ")


@pytest.mark.parametrize("change", [
    {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
    user_blocks({"type": "web_search_tool_result", "tool_use_id": "s", "content": []}),
    {"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]},
])
def test_server_tools_are_refused_as_anthropic_only(change: Json) -> None:
    with pytest.raises(InvalidRequest, match="works only with an Anthropic upstream"):
        codec.decode_request({**BASE, **change})
# fmt: on


@pytest.mark.parametrize("field", [*sorted(DROPPED_FIELDS), "some_future_field"])
def test_fields_without_canonical_meaning_are_dropped(field: str) -> None:
    assert codec.decode_request({**BASE, field: {"type": "auto"}}) == codec.decode_request(BASE)


def test_a_user_turn_splits_into_tool_messages_then_the_rest() -> None:
    body = {**BASE, **user_blocks(
        {"type": "text", "text": "a"},
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/p.png"}}]},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}, "title": "T", "context": "c"},
        {"type": "tool_result", "tool_use_id": "t2"},
    )}  # fmt: skip
    assert codec.decode_request(body).messages == [
        Message("tool", [ToolResult("t1", [Image(url="https://x/p.png")])]),
        Message("tool", [ToolResult("t2")]),
        Message("user", [Text("a"), Document(media_type="text/plain", text="doc", title="T")]),
    ]


@pytest.mark.parametrize(
    ("fields", "reasoning"),
    [
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2000}},
            ReasoningConfig(True, None, 2000),
        ),
        (
            {"thinking": {"type": "adaptive", "display": "omitted"}},
            ReasoningConfig(True, include=False),
        ),
        ({"thinking": {"type": "disabled"}}, ReasoningConfig(False)),
        ({"output_config": {"effort": "max"}}, ReasoningConfig(effort="max")),
        (
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}},
            ReasoningConfig(True, "low"),
        ),
        ({}, None),
    ],
)
def test_thinking_and_effort_decode(fields: Json, reasoning: ReasoningConfig | None) -> None:
    assert codec.decode_request({**BASE, **fields}).reasoning == reasoning


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice("auto")),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            ToolChoice("required", parallel=False),
        ),
        ({"type": "none"}, ToolChoice("none")),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": False},
            ToolChoice("tool", "f", parallel=True),
        ),
    ],
)
def test_tool_choice_decodes(choice: Json, expected: ToolChoice) -> None:
    assert codec.decode_request({**BASE, "tool_choice": choice}).tool_choice == expected


def test_output_format_decodes_to_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "additionalProperties": False,
    }
    req = codec.decode_request(
        {**BASE, "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    )
    assert req.response_format == ResponseFormat("json_schema", schema)


def encode(**fields: Any) -> Json:
    fields.setdefault("messages", [Message("user", [Text("hi")])])
    return codec.encode_request(Request("alias", **fields), "claude-sonnet-4-5")


def test_encode_web_search_is_the_server_tool() -> None:
    search = WebSearch(["python.org"], {"city": "Paris"})
    body = encode(tools=[Tool("f")], web_search=search, tool_choice=ToolChoice("required"))
    assert body["tools"][1] == {
        "type": "web_search_20250305",
        "name": "web_search",
        "allowed_domains": ["python.org"],
        "user_location": {"type": "approximate", "city": "Paris"},
    }
    assert body["tool_choice"] == {"type": "any"}
    assert encode(web_search=WebSearch())["tools"] == [
        {"type": "web_search_20250305", "name": "web_search"}
    ]
    # a client function of that name keeps it (Anthropic refuses two tools of one name)
    assert [
        t["name"] for t in encode(tools=[Tool("web_search")], web_search=WebSearch())["tools"]
    ] == ["web_search"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"response_format": ResponseFormat("json_object")}, "response_format"),
        ({"response_format": ResponseFormat("json_schema")}, "response_format"),
        ({"reasoning": ReasoningConfig(effort="extreme")}, "reasoning_effort"),
        ({"messages": [Message("user", [Image(data="AAAA")])]}, "messages[0].parts[0]"),
        ({"messages": [Message("user", [Document()])]}, "messages[0].parts[0]"),
        (
            {
                "messages": [
                    Message("user", [Text("a")]),
                    Message("system", [Image(url="https://x")]),
                ]
            },
            "messages[1].parts[0]",
        ),
        ({"tools": [Tool("f")], "tool_choice": ToolChoice("tool")}, "tool_choice"),
    ],
)
def test_encode_request_refuses_what_anthropic_cannot_express(fields: Json, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        encode(**fields)
    assert info.value.param == param


def test_n_above_one_says_so() -> None:
    with pytest.raises(InvalidRequest, match="n > 1 is not supported by Anthropic"):
        encode(n=3)


def test_encode_request_drops_what_anthropic_has_no_place_for() -> None:
    body = encode(
        messages=[
            Message("user", [Text(""), Image(url="data:image/png;base64,iVBO", detail="low")], name="bob"),
            Message("assistant", [Reasoning("unsigned"), ToolCall("c1", "f", "{}", signature="gsig")]),
            Message("assistant", [Reasoning("unsigned only")]),
            Message("tool", [ToolResult("c1", [Text("ok")], name="f")]),
        ],
        seed=7, presence_penalty=0.5, frequency_penalty=0.5, metadata={"k": "v"}, stream_usage=True,
        tool_choice=ToolChoice("auto"),
    )  # fmt: skip
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "ok"}]}]},
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("reasoning", "max_tokens", "thinking", "sent_max"),
    [
        (ReasoningConfig(enabled=True), None, {"type": "adaptive"}, 4096),
        (
            ReasoningConfig(enabled=True, include=False),
            2000,
            {"type": "adaptive", "display": "omitted"},
            2000,
        ),
        (ReasoningConfig(enabled=False, effort="high"), 100, {"type": "disabled"}, 100),
        (ReasoningConfig(effort="none"), None, {"type": "disabled"}, 4096),
        (ReasoningConfig(effort="low"), 8000, {"type": "enabled", "budget_tokens": 1024}, 8000),
        (ReasoningConfig(effort="medium"), None, {"type": "enabled", "budget_tokens": 4096}, 8192),
        (ReasoningConfig(effort="high"), 8000, {"type": "enabled", "budget_tokens": 7999}, 8000),
        (
            ReasoningConfig(budget_tokens=500),
            4000,
            {"type": "enabled", "budget_tokens": 1024},
            4000,
        ),
        (ReasoningConfig(budget_tokens=2000), 1000, None, 1000),  # no room: thinking dropped
        (ReasoningConfig(), None, None, 4096),
    ],
)
def test_reasoning_encodes_to_thinking(
    reasoning: ReasoningConfig, max_tokens: int | None, thinking: Json | None, sent_max: int
) -> None:
    body = encode(reasoning=reasoning, max_tokens=max_tokens)
    assert (body.get("thinking"), body["max_tokens"]) == (thinking, sent_max)
    assert "output_config" not in body


@pytest.mark.parametrize(
    ("reasoning", "expected"),
    [
        (None, {"temperature": 1.0, "top_p": 0.5, "top_k": 40}),  # temperature 1.7 clamped to 1
        (ReasoningConfig(enabled=False), {"temperature": 1.0, "top_p": 0.5, "top_k": 40}),
        (ReasoningConfig(enabled=True), {}),
    ],
)
def test_sampling_is_forwarded_except_what_thinking_forbids(
    reasoning: ReasoningConfig | None, expected: Json
) -> None:
    body = encode(reasoning=reasoning, temperature=1.7, top_p=0.5, top_k=40)
    assert {k: body[k] for k in ("temperature", "top_p", "top_k") if k in body} == expected


def test_a_forced_tool_wins_over_thinking() -> None:
    body = encode(
        tools=[Tool("f")],
        tool_choice=ToolChoice("required", parallel=False),
        reasoning=ReasoningConfig(enabled=True),
    )
    assert "thinking" not in body
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]


def test_tool_messages_and_the_next_user_message_share_one_turn_results_first() -> None:
    body = encode(messages=[
        Message("system", [Text("lead")]),
        Message("user", [Text("q")]),
        Message("assistant", [ToolCall("a", "f", '{"x":1}'), ToolCall("b", "f", "not json")]),
        Message("tool", [ToolResult("a", [Text("1")], is_error=True)]),
        Message("tool", [Text("stray"), ToolResult("b")]),
        Message("user", [Text("next")]),
        Message("system", [Text("mid", cache=True)]),
        Message("user", [Text("last")]),
    ], system=[Text("sys", cache=True)])  # fmt: skip
    assert body["system"] == [
        {"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "lead"},
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "a", "name": "f", "input": {"x": 1}},
            {"type": "tool_use", "id": "b", "name": "f", "input": {"_raw": "not json"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "1"}], "is_error": True},
            {"type": "tool_result", "tool_use_id": "b"},
            {"type": "text", "text": "stray"},
            {"type": "text", "text": "next"}]},
        {"role": "system", "content": [{"type": "text", "text": "mid", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "text", "text": "last"}]},
    ]  # fmt: skip


# fmt: off
@pytest.mark.parametrize(("part", "block"), [
    (Image(media_type="image/webp", data="UklG"), {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklG"}}),
    (Image(url="https://x/a.png"), {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}),
    (Document(data="JVBE", title="t"), {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}, "title": "t"}),
    (Document(url="https://x/a.pdf"), {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}),
    (Document(text="plain"), {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain"}}),
    (Document(url="data:application/pdf;base64,JVBE"), {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}),
    (Reasoning(redacted="opaque"), {"type": "redacted_thinking", "data": "opaque"}),
    (Reasoning("t", signature="s"), {"type": "thinking", "thinking": "t", "signature": "s"}),
    (ToolCall("i", "f", ""), {"type": "tool_use", "id": "i", "name": "f", "input": {}}),
    (ToolCall("i", "f", "[1]"), {"type": "tool_use", "id": "i", "name": "f", "input": {"_raw": "[1]"}}),
])
def test_parts_encode_to_blocks(part: Any, block: Json) -> None:
    assert encode(messages=[Message("user", [part])])["messages"][0]["content"] == [block]
# fmt: on


def test_stop_user_stream_and_schema_format_encode() -> None:
    schema = {"type": "object", "properties": {}}
    body = encode(
        stop=["END"],
        user="u-1",
        stream=True,
        response_format=ResponseFormat("json_schema", schema, "n", True),
    )
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["stream"] is True
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


# ============================================================================ answers


def answer(
    parts: list[Any],
    reason: Any = "stop",
    stop_sequence: str | None = None,
    usage: Usage | None = None,
) -> Response:
    return Response(
        "chatcmpl-9",
        "gpt-x",
        [Choice(0, Message("assistant", parts), reason, stop_sequence)],
        usage,
    )


@pytest.mark.parametrize(
    ("reason", "stop_sequence", "wire"),
    [
        ("stop", None, ("end_turn", None)),
        ("stop", "END", ("stop_sequence", "END")),
        ("length", None, ("max_tokens", None)),
        ("tool_calls", None, ("tool_use", None)),
        ("content_filter", None, ("refusal", None)),
        ("error", None, ("end_turn", None)),
        (None, None, ("end_turn", None)),
    ],
)
def test_finish_reasons_encode_to_stop_reasons(
    reason: Any, stop_sequence: str | None, wire: tuple[str, str | None]
) -> None:
    body = codec.encode_response(answer([Text("x")], reason, stop_sequence))
    assert (body["stop_reason"], body["stop_sequence"]) == wire


def test_encode_response_shape_usage_and_drops() -> None:
    usage = Usage(
        input_tokens=100,
        output_tokens=20,
        cache_read_tokens=60,
        cache_write_tokens=10,
        reasoning_tokens=5,
    )
    parts = [
        Reasoning("hm"),
        Text(""),
        Image(url="https://x"),
        Text("hi", cache=True),
        ToolCall("c", "f", "{oops"),
    ]
    resp = answer(parts, "tool_calls", usage=usage)
    resp.choices.append(Choice(1, Message("assistant", [Text("second choice")])))
    assert codec.encode_response(resp) == {
        "id": "msg_chatcmpl-9", "type": "message", "role": "assistant", "model": "gpt-x",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": ""},
            {"type": "text", "text": "hi"},
            {"type": "tool_use", "id": "c", "name": "f", "input": {"_raw": "{oops"}},
        ],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 20, "cache_creation_input_tokens": 10,
                  "cache_read_input_tokens": 60, "output_tokens_details": {"thinking_tokens": 5}},
    }  # fmt: skip


OBSERVED_MESSAGE = {
    "id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "thinking", "thinking": "…", "signature": "EqQB…"},
                {"type": "text", "text": "Hello"},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
                {"type": "tool_use", "id": "toolu_01abc", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 6, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 100,
              "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 0}, "service_tier": "standard"},
}  # fmt: skip


def test_decode_response_normalises_usage_and_skips_unknown_blocks() -> None:
    assert codec.decode_response(OBSERVED_MESSAGE) == Response(
        "msg_01abc",
        "claude-sonnet-4-5",
        [Choice(0, Message("assistant", [
            Reasoning("…", signature="EqQB…"),
            Text("Hello"),
            ToolCall("toolu_01abc", "get_weather", '{"city":"Paris"}'),
        ]), "tool_calls")],
        Usage(input_tokens=115, output_tokens=6, cache_read_tokens=100, cache_write_tokens=3),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("stop_reason", "stop_sequence", "finish"),
    [
        ("end_turn", None, "stop"),
        ("stop_sequence", "END", "stop"),
        ("max_tokens", None, "length"),
        ("model_context_window_exceeded", None, "length"),
        ("tool_use", None, "tool_calls"),
        ("refusal", None, "content_filter"),
        ("pause_turn", None, "stop"),
        ("some_future_reason", None, "stop"),
    ],
)
def test_stop_reasons_decode(stop_reason: str, stop_sequence: str | None, finish: str) -> None:
    body = {**OBSERVED_MESSAGE, "stop_reason": stop_reason, "stop_sequence": stop_sequence}
    choice = codec.decode_response(body).choices[0]
    assert (choice.finish_reason, choice.stop_sequence) == (finish, stop_sequence)


@pytest.mark.parametrize(
    "change",
    [
        {"content": None},
        {"content": "text"},
        {"id": 1},
        {"usage": {"input_tokens": "12"}},
        {"content": [{"type": "text"}]},
        {"stop_reason": 3},
    ],
)
def test_decode_response_refuses_malformed_answers(change: Json) -> None:
    with pytest.raises(UpstreamProtocolError, match="invalid message"):
        codec.decode_response({**OBSERVED_MESSAGE, **change})


# ============================================================================ streams: decoding


def golden(name: str) -> bytes:
    return (GOLDEN / f"anthropic_{name}.sse").read_bytes()


def decode_pieces(data: bytes, cuts: list[int]) -> tuple[list[Event], bool]:
    decoder = codec.StreamDecoder()
    events: list[Event] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        events += decoder.feed(data[start:end])
    return events, decoder.done


SIG = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds2VyB4fOhOsLz4Q=="
TOOL_1, TOOL_2 = "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01VrcfrRbx3HhKGvLxNpqcbL"
GOLDEN_EVENTS: dict[str, list[Event]] = {
    "text": [
        StreamStart("msg_01XFDUDYJgAACzvnptvVoYEL", "claude-sonnet-4-5", usage=Usage(12, 1)),
        TextDelta("Hel"),
        TextDelta('lo 中文 "q"'),
        Finish("stop"),
        UsageEvent(Usage(12, 6)),
    ],
    "thinking": [
        StreamStart("msg_01Aq9w938a90dw8q", "claude-opus-4-8", usage=Usage(2253, 1, 2048, 200)),
        ReasoningDelta("The user wants a haiku. "),
        ReasoningDelta("Five, seven, five syllables."),
        ReasoningDelta(signature=SIG),
        ReasoningDelta(redacted="EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"),
        TextDelta("Autumn moonlight—\na worm digs silently\ninto the chestnut."),
        Finish("stop"),
        UsageEvent(Usage(2253, 61, 2048, 200, reasoning_tokens=40)),  # input kept from the start
    ],
    "tool_use": [
        StreamStart("msg_014p7gG3wDgGV9EUtLvnow3U", "claude-sonnet-4-5", usage=Usage(472, 2)),
        TextDelta("Let me check both cities."),
        ToolCallStart(TOOL_1, "get_weather", call_index=0),
        ToolCallDelta('{"city": "Pa', 0),
        ToolCallDelta('ris", "unit": "c"}', 0),
        ToolCallStart(TOOL_2, "get_weather", call_index=1),
        ToolCallDelta('{"city":', 1),
        ToolCallDelta(' "東京"}', 1),
        Finish("tool_calls"),
        UsageEvent(Usage(472, 89)),
    ],
    "error": [
        StreamStart("msg_01Fz8k2M3bq6vXo1", "claude-sonnet-4-5", usage=Usage(30, 1)),
        TextDelta("Once upon"),
        StreamError(
            "Overloaded", status=503, type="service_unavailable_error", code="overloaded_error"
        ),
    ],
}


@pytest.mark.parametrize("name", GOLDEN_EVENTS)
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1 << 20])
def test_golden_transcripts_decode_the_same_however_split(name: str, step: int) -> None:
    data = golden(name)
    events, done = decode_pieces(data, list(range(step, len(data), step)))
    assert events == GOLDEN_EVENTS[name]
    assert done is (name != "error")


@pytest.mark.parametrize("cut", range(len(golden("text")) + 1))
def test_short_transcript_decodes_the_same_split_at_any_byte(cut: int) -> None:
    assert decode_pieces(golden("text"), [cut]) == (GOLDEN_EVENTS["text"], True)


@pytest.mark.parametrize("name", ["text", "tool_use"])
@pytest.mark.parametrize("step", [1, 2, 7])
def test_crlf_transcripts_decode_the_same(name: str, step: int) -> None:
    data = golden(name).replace(b"\n", b"\r\n")
    assert decode_pieces(data, list(range(step, len(data), step))) == (GOLDEN_EVENTS[name], True)


@pytest.mark.parametrize(
    "pieces",
    [
        [b"event: message_stop\r", b"\ndata: {}\r\n\r\n"],
        [b"event: message_stop\r\ndata: {}\r", b"\n\r", b"\n"],
        [b"event: message_stop\rdata: {}\r\r"],
    ],
)
def test_a_line_end_split_between_chunks_does_not_cut_an_event(pieces: list[bytes]) -> None:
    decoder = codec.StreamDecoder()  # data without "type": only the event line says what it is
    assert [decoder.feed(p) for p in pieces] == [[]] * len(pieces)
    assert decoder.done


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("overloaded_error", 503),
        ("rate_limit_error", 429),
        ("timeout_error", 504),
        ("api_error", 502),
        ("invalid_request_error", 502),
    ],
)
def test_stream_error_events_map_to_a_status(kind: str, status: int) -> None:
    data = (
        b'event: error\ndata: {"type":"error","error":{"type":"%s","message":"m"}}\n\n'
        % kind.encode()
    )
    decoder = codec.StreamDecoder()
    [event] = decoder.feed(data + b"event: message_stop\ndata: {}\n\n")
    assert isinstance(event, StreamError)
    assert (event.status, event.code, event.message, decoder.done) == (status, kind, "m", False)


@pytest.mark.parametrize(
    "data",
    [
        b"event: content_block_delta\ndata: {not json\n\n",
        b"event: message_start\ndata: [1, 2]\n\n",
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":"0","delta":{"type":"text_delta","text":"x"}}\n\n',
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m"}}\n\n',
    ],
)
def test_malformed_events_raise_upstream_protocol_error(data: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        codec.StreamDecoder().feed(data)


def test_an_oversized_event_raises_instead_of_growing_without_bound() -> None:
    decoder = codec.StreamDecoder()
    decoder.feed(b"event: content_block_delta\ndata: " + b"x" * (4 << 20))
    with pytest.raises(UpstreamProtocolError, match="larger than the limit"):
        decoder.feed(b"x" * (5 << 20))


def test_unknown_events_blocks_and_deltas_are_skipped() -> None:
    data = (
        b': comment\n\nevent: future_event\ndata: {"type":"future_event"}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"s","name":"web_search","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
        b"event: content_block_delta\ndata: {after the end\n\n"
    )
    decoder = codec.StreamDecoder()
    assert (decoder.feed(data), decoder.done) == ([], True)


# ============================================================================ streams: encoding


def sse_events(data: bytes) -> list[tuple[str, Json]]:
    out = []
    for raw in data.split(b"\n\n")[:-1]:
        name, payload = raw.split(b"\n")
        assert name.startswith(b"event: ") and payload.startswith(b"data: ")
        out.append((name[7:].decode(), orjson.loads(payload[6:])))
    return out


def encode_events(events: list[Event], *, close: bool = True) -> bytes:
    encoder = codec.StreamEncoder(Request("alias"))
    return b"".join(encoder.feed(e) for e in events) + (encoder.close() if close else b"")


def test_close_without_any_event_is_a_valid_minimal_stream() -> None:
    events = sse_events(encode_events([]))
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0][1]["message"]["model"] == "alias"
    assert events[0][1]["message"]["id"].startswith("msg_")
    assert events[1][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_other_choices_are_ignored_and_stop_sequence_is_reported() -> None:
    events = [
        StreamStart("msg_1", "m"),
        TextDelta("one"),
        TextDelta("two", index=1),
        Finish("length", index=1),
        Finish("stop", stop_sequence="END"),
    ]
    names = sse_events(encode_events(events))
    assert [p["delta"]["text"] for n, p in names if n == "content_block_delta"] == ["one"]
    assert names[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_fail_sends_an_anthropic_error_event_and_ends_the_stream() -> None:
    encoder = codec.StreamEncoder(Request("alias"))
    encoder.feed(TextDelta("partial"))
    out = encoder.fail(StreamError("upstream is busy", status=503))
    assert sse_events(out) == [
        (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "upstream is busy"}},
        )
    ]
    assert (encoder.feed(TextDelta("late")), encoder.close(), encoder.fail(StreamError("x"))) == (
        b"",
        b"",
        b"",
    )


def test_interleaved_tool_call_fragments_cannot_be_expressed() -> None:
    encoder = codec.StreamEncoder(Request("alias"))
    encoder.feed(ToolCallStart("a", "f", call_index=0))
    encoder.feed(ToolCallStart("b", "f", call_index=1))
    with pytest.raises(UpstreamProtocolError, match="cannot interleave"):
        encoder.feed(ToolCallDelta("{}", call_index=0))


ROUND_TRIP_EVENTS: list[Event] = [
    StreamStart("msg_1", "claude-x", usage=Usage(50, 1, 30, 5)),
    ReasoningDelta("think "),
    ReasoningDelta("more"),
    ReasoningDelta(signature="sig-1"),
    ReasoningDelta("second block"),
    ReasoningDelta(redacted="opaque"),
    TextDelta("answer"),
    ToolCallStart("toolu_a", "f", call_index=0),
    ToolCallDelta('{"x":', 0),
    ToolCallDelta("1}", 0),
    ToolCallStart("toolu_b", "g", call_index=1),
    Finish("tool_calls"),
    UsageEvent(Usage(50, 40, 30, 5, reasoning_tokens=12)),
]


def test_encoded_events_decode_back_to_themselves() -> None:
    assert decode_pieces(encode_events(ROUND_TRIP_EVENTS), []) == (ROUND_TRIP_EVENTS, True)


# ============================================================================ the official SDK


class Replay:
    """A loopback server answering every POST /v1/messages with the prepared reply."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, bytes] = (200, "application/json", b"{}")
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        status, content_type, body = self.reply
        return web.Response(status=status, body=body, headers={"content-type": content_type})

    def _run(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> Replay:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def client(self, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{self.port}", api_key="x", max_retries=0, **options
        )


@pytest.fixture(scope="module")
def replay() -> Iterator[Replay]:
    with Replay() as server:
        yield server


def sdk_stream(replay: Replay, data: bytes) -> Any:
    replay.reply = (200, "text/event-stream", data)
    with replay.client().messages.stream(
        model="claude-opus-4-8", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        return stream.get_final_message()


def test_sdk_accumulates_the_encoded_stream(replay: Replay) -> None:
    message = sdk_stream(replay, encode_events(ROUND_TRIP_EVENTS))
    assert [b.type for b in message.content] == [
        "thinking",
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert (message.content[0].thinking, message.content[0].signature) == ("think more", "sig-1")
    assert (message.content[1].thinking, message.content[1].signature) == ("second block", "")
    assert message.content[3].text == "answer"
    assert (message.content[4].id, message.content[4].input) == ("toolu_a", {"x": 1})
    assert message.content[5].input == {}
    assert (message.stop_reason, message.usage.input_tokens, message.usage.output_tokens) == (
        "tool_use",
        15,
        40,
    )
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (
        30,
        5,
    )


def test_sdk_accepts_a_stream_closed_without_events(replay: Replay) -> None:
    message = sdk_stream(replay, encode_events([]))
    assert (message.content, message.stop_reason, message.model) == ([], "end_turn", "alias")


def test_sdk_raises_on_the_fail_event(replay: Replay) -> None:
    encoder = codec.StreamEncoder(Request("alias"))
    data = encoder.feed(TextDelta("Once")) + encoder.fail(StreamError("Overloaded", status=503))
    with pytest.raises(anthropic.APIStatusError) as info:
        sdk_stream(replay, data)
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_sdk_strictly_validates_the_encoded_answer(replay: Replay) -> None:
    usage = Usage(100, 20, cache_read_tokens=60, cache_write_tokens=10, reasoning_tokens=5)
    parts = [
        Reasoning("hm", signature="s"),
        Reasoning(redacted="r"),
        Text("hi"),
        ToolCall("c", "f", '{"a":[1]}'),
    ]
    replay.reply = (
        200,
        "application/json",
        orjson.dumps(codec.encode_response(answer(parts, "tool_calls", usage=usage))),
    )
    message = replay.client(_strict_response_validation=True).messages.create(
        model="claude-opus-4-8", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert [b.type for b in message.content] == [
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
    ]
    assert (message.content[3].input, message.stop_reason, message.usage.input_tokens) == (
        {"a": [1]},
        "tool_use",
        30,
    )
    assert (
        message.usage.output_tokens_details is not None
        and message.usage.output_tokens_details.thinking_tokens == 5
    )


@pytest.mark.parametrize(
    ("err", "exc"),
    [
        (InvalidRequest("bad"), anthropic.BadRequestError),
        (AuthenticationFailed("who"), anthropic.AuthenticationError),
        (PermissionDenied("no"), anthropic.PermissionDeniedError),
        (NotFound("gone"), anthropic.NotFoundError),
        (PayloadTooLarge("big"), anthropic.RequestTooLargeError),
        (UpstreamOverloaded("busy"), anthropic.OverloadedError),
        (UpstreamConnectError("down"), anthropic.InternalServerError),
    ],
)
def test_sdk_maps_error_bodies_to_its_exceptions(
    replay: Replay, err: QiaoError, exc: type[anthropic.APIStatusError]
) -> None:
    status, body = codec.error_body(err)
    replay.reply = (status, "application/json", orjson.dumps(body))
    with pytest.raises(exc) as info:
        replay.client().messages.create(
            model="claude-opus-4-8", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body == body


# ============================================================================ errors


@pytest.mark.parametrize(
    ("err", "status", "kind"),
    [
        (InvalidRequest("m"), 400, "invalid_request_error"),
        (AuthenticationFailed("m"), 401, "authentication_error"),
        (PermissionDenied("m"), 403, "permission_error"),
        (NotFound("m"), 404, "not_found_error"),
        (PayloadTooLarge("m"), 413, "request_too_large"),
        (QiaoError("m"), 500, "api_error"),
        (UpstreamConnectError("m"), 502, "api_error"),
        (UpstreamProtocolError("m"), 502, "api_error"),
        (UpstreamOverloaded("m"), 529, "overloaded_error"),
        (Unavailable("m"), 529, "overloaded_error"),
        (UpstreamTimeout("m"), 504, "timeout_error"),
    ],
)
def test_error_body_shapes(err: QiaoError, status: int, kind: str) -> None:
    assert codec.error_body(err) == (
        status,
        {"type": "error", "error": {"type": kind, "message": "m"}},
    )


def test_rate_limits_keep_429() -> None:
    err = QiaoError("slow down")
    err.status = 429
    assert codec.error_body(err) == (
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}',
            "Overloaded",
        ),
        (b'{"type":"error","error":{"type":"api_error"}}', None),
        (b'{"error":"flat"}', None),
        (b"<html>502 Bad Gateway</html>", None),
        (b"[]", None),
    ],
)
def test_error_message_reads_error_message(body: bytes, message: str | None) -> None:
    assert codec.error_message(529, body) == message


# ============================================================================ properties

texts = st.text(min_size=1, max_size=8)
ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
b64 = st.binary(min_size=1, max_size=6).map(lambda b: base64.b64encode(b).decode())
urls = ids.map(lambda s: f"https://example.com/{s}")
titles = st.none() | texts
text_parts = st.builds(Text, texts, st.booleans())
media = st.one_of(
    text_parts,
    st.builds(Image, media_type=st.sampled_from(["image/png", "image/jpeg"]), data=b64),
    st.builds(Image, url=urls),
    st.builds(Document, media_type=st.just("application/pdf"), data=b64, title=titles),
    st.builds(Document, media_type=st.just("text/plain"), text=texts, title=titles),
    st.builds(Document, url=urls, title=titles),
)
scalars = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=4)
arguments = st.dictionaries(st.text(max_size=4), scalars, max_size=3).map(
    lambda d: orjson.dumps(d).decode()
)
tool_calls = st.builds(ToolCall, id=ids.map("call_".__add__), name=ids, arguments=arguments)
reasonings = st.builds(Reasoning, text=st.text(max_size=6), signature=ids) | st.builds(
    Reasoning, redacted=ids
)
tool_messages = st.builds(
    lambda r: Message("tool", [r]),
    st.builds(
        ToolResult,
        call_id=ids.map("res_".__add__),
        content=st.lists(media, max_size=2),
        is_error=st.booleans(),
    ),
)
later_messages = st.one_of(
    st.builds(Message, st.just("user"), st.lists(media, min_size=1, max_size=3)),
    st.builds(
        Message,
        st.just("assistant"),
        st.lists(text_parts | reasonings | tool_calls, min_size=1, max_size=3),
    ),
    st.builds(Message, st.just("system"), st.lists(text_parts, min_size=1, max_size=2)),
    tool_messages,
)
schemas = st.dictionaries(ids, st.just({"type": "string"}), max_size=2).map(
    lambda p: {"type": "object", "properties": p}
)
tools = st.builds(
    Tool, name=ids, description=titles, parameters=schemas, strict=st.none() | st.booleans()
)
choices = st.one_of(
    st.builds(
        ToolChoice, st.sampled_from(["auto", "required"]), parallel=st.none() | st.booleans()
    ),
    st.just(ToolChoice("none")),
    st.builds(ToolChoice, st.just("tool"), ids, st.none() | st.booleans()),
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """Requests whose every field Anthropic can express (see the codec's drop rules)."""
    tool_list = draw(st.lists(tools, max_size=2))
    choice = draw(st.none() | choices) if tool_list else None
    max_tokens = draw(st.integers(1, 100_000))
    options = [st.none(), st.just(ReasoningConfig(False))]
    if choice is None or choice.mode in ("auto", "none"):  # a forced tool drops thinking
        options.append(st.builds(ReasoningConfig, st.just(True), include=st.booleans()))
        if max_tokens > 1024:
            options.append(
                st.builds(
                    ReasoningConfig,
                    st.just(True),
                    budget_tokens=st.integers(1024, max_tokens - 1),
                    include=st.booleans(),
                )
            )
    reasoning = draw(st.one_of(options))
    thinking = reasoning is not None and reasoning.enabled
    sampling = st.none() if thinking else st.none() | st.floats(0, 1)
    stream = draw(st.booleans())
    schema = st.builds(ResponseFormat, st.just("json_schema"), schemas)
    return Request(
        model="claude-test",
        messages=[
            draw(st.builds(Message, st.just("user"), st.lists(media, min_size=1, max_size=2))),
            *draw(st.lists(later_messages, max_size=6)),
        ],
        system=draw(st.lists(text_parts, max_size=2)),
        tools=tool_list,
        tool_choice=choice,
        max_tokens=max_tokens,
        temperature=draw(sampling),
        top_p=draw(sampling),
        top_k=None if thinking else draw(st.none() | st.integers(1, 500)),
        stop=draw(st.lists(texts, max_size=2)),
        stream=stream,
        stream_usage=stream,
        response_format=draw(st.none() | schema),
        reasoning=reasoning,
        user=draw(st.none() | texts),
    )


@settings(max_examples=200, deadline=None)
@given(requests())
def test_expressible_requests_survive_encode_then_decode(req: Request) -> None:
    assert codec.decode_request(codec.encode_request(req, "claude-test")) == req


@st.composite
def responses(draw: st.DrawFn) -> Response:
    reason = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    unsigned = st.builds(Reasoning, text=st.text(max_size=6))
    parts = draw(st.lists(st.builds(Text, texts) | reasonings | unsigned | tool_calls, max_size=4))
    fresh, read, write, out = (draw(st.integers(0, 10_000)) for _ in range(4))
    usage = Usage(fresh + read + write, out, read, write, draw(st.integers(0, out)))
    sequence = draw(st.none() | texts) if reason == "stop" else None
    return Response(
        "msg_" + draw(ids),
        draw(ids),
        [Choice(0, Message("assistant", parts), reason, sequence)],
        usage,
    )


@settings(max_examples=200, deadline=None)
@given(responses())
def test_responses_survive_encode_then_decode(resp: Response) -> None:
    assert codec.decode_response(codec.encode_response(resp)) == resp


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    """Well-formed canonical streams: tool fragments follow their call, usage is consistent."""
    events: list[Event] = [
        StreamStart("msg_" + draw(ids), draw(ids), usage=Usage(draw(st.integers(0, 99)), 1))
    ]
    calls = 0
    for kind in draw(
        st.lists(st.sampled_from(["text", "think", "sign", "redacted", "tool"]), max_size=8)
    ):
        if kind == "tool":
            events.append(ToolCallStart("toolu_" + draw(ids), draw(ids), call_index=calls))
            events += [ToolCallDelta(a, calls) for a in draw(st.lists(texts, max_size=3))]
            calls += 1
        else:
            value = draw(texts)
            events.append(
                {
                    "text": TextDelta(value),
                    "think": ReasoningDelta(value),
                    "sign": ReasoningDelta(signature=value),
                    "redacted": ReasoningDelta(redacted=value),
                }[kind]
            )
    start = events[0]
    assert isinstance(start, StreamStart) and start.usage is not None
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    usage = Usage(
        start.usage.input_tokens, draw(st.integers(0, 99)), reasoning_tokens=draw(st.integers(0, 5))
    )
    return [*events, Finish(finish), UsageEvent(usage)]


@settings(max_examples=200, deadline=None)
@given(event_streams(), st.integers(1, 9))
def test_event_streams_survive_encode_then_decode(events: list[Event], step: int) -> None:
    data = encode_events(events)
    assert decode_pieces(data, list(range(step, len(data), step))) == (events, True)
