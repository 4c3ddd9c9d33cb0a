"""Claude Code through Qiao: its captured request shape (protocols.md §1.5), both to an
Anthropic upstream (passthrough, headers forwarded) and to an OpenAI-type upstream (translated),
stream and non-stream."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from conftest import CLIENT_KEY
from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import FakeOpenAI
from gateway import Gateway

BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,mid-conversation-system-2026-04-07,"
    "effort-2025-11-24"
)


def _tool(i: int) -> dict[str, Any]:
    props = {f"field_{j}": {"type": "string", "description": "x" * 200} for j in range(12)}
    props["path"] = {"type": "string"}
    return {
        "name": f"Tool{i}",
        "description": "A tool. " * 50,
        "input_schema": {
            "type": "object",
            "properties": props,
            "required": ["path"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    }


def claude_code_body(stream: bool) -> dict[str, Any]:
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 32000,
        "stream": stream,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {
            "user_id": json.dumps({"device_id": "f4ca", "account_uuid": "", "session_id": "86d4"})
        },
        "system": [
            {
                "type": "text",
                "text": "x-anthropic-billing-header: cc_version=2.1.197.123; cc_entrypoint=sdk-cli;",
            },
            {
                "type": "text",
                "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>be careful</system-reminder>"},
                    {"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {"role": "system", "content": "Available agent types for the Agent tool: general"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Reading."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "Tool0",
                        "input": {"path": "/etc/hostname"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "box"},
                    {"type": "text", "text": "now say hi"},
                ],
            },
        ],
        "tools": [_tool(i) for i in range(24)],
    }


HEADERS = {
    "x-api-key": CLIENT_KEY,
    "anthropic-version": "2023-06-01",
    "anthropic-beta": BETAS,
    "X-Claude-Code-Session-Id": "86d4f21e",
    "anthropic-dangerous-direct-browser-access": "true",
    "Content-Type": "application/json",
    "User-Agent": "claude-cli/2.1.197 (external, sdk-cli)",
}


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    with (
        FakeOpenAI(api_key="sk-cc-openai-0123456789") as fo,
        FakeAnthropic(api_key="sk-ant-cc-0123456789") as fa,
    ):
        yield fo, fa


@pytest.fixture(scope="module")
def gw(ups: tuple[FakeOpenAI, FakeAnthropic]) -> Iterator[Gateway]:
    fo, fa = ups
    config = f"""
providers:
  deepseek: {{type: deepseek, base_url: "{fo.base_url}", api_key: sk-cc-openai-0123456789}}
  claude: {{type: anthropic, base_url: "{fa.url}", api_key: sk-ant-cc-0123456789}}
models:
  claude-opus-4-8: [{{provider: deepseek, model: gpt-4o-mini}}]
  claude-sonnet-4-6: [{{provider: claude}}]
keys: [{{name: cc, key: {CLIENT_KEY}}}]
"""
    with Gateway(config) as g:
        yield g


def post(gw: Gateway, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request("POST", "/v1/messages?beta=true", body=json.dumps(body), headers=HEADERS)
    resp = conn.getresponse()
    return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}


def sse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in data.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_head_probe(gw: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("HEAD", "/")
    assert conn.getresponse().status == 200


@pytest.mark.parametrize("stream", [False, True])
def test_translated_to_openai_upstream(
    gw: Gateway, ups: tuple[FakeOpenAI, FakeAnthropic], stream: bool
) -> None:
    fo, _ = ups
    status, data, headers = post(gw, claude_code_body(stream))
    assert status == 200, data
    assert headers["x-qiao-provider"] == "deepseek"
    sent = fo.last_request.json
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "system", "assistant", "tool", "user"]
    assert "billing-header" not in json.dumps(sent["messages"][0])
    assert "Claude Agent SDK" in sent["messages"][0]["content"]
    assert sent["messages"][3]["tool_calls"][0]["function"]["name"] == "Tool0"
    assert sent["messages"][4] == {"role": "tool", "tool_call_id": "toolu_01", "content": "box"}
    assert len(sent["tools"]) == 24 and sent["tools"][0]["function"]["parameters"]["required"] == [
        "path"
    ]
    assert sent["reasoning_effort"] == "high"
    assert "context_management" not in sent and "thinking" not in sent
    if not stream:
        msg = json.loads(data)
        assert msg["type"] == "message" and msg["model"] == "claude-opus-4-8"
        assert msg["content"][-1]["type"] == "tool_use"  # the fake calls the first tool
        assert msg["stop_reason"] == "tool_use"
        return
    events = sse_events(data)
    kinds = [k for k, _ in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "message_delta" in kinds
    tool_json = "".join(
        e["delta"]["partial_json"]
        for k, e in events
        if k == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(tool_json)["path"] == "now say hi"
    delta = next(e for k, e in events if k == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] > 0


def test_translated_stream_parsed_by_anthropic_sdk(gw: Gateway) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0)
    body = claude_code_body(True)
    with client.messages.stream(
        model=body["model"],
        max_tokens=1000,
        system=body["system"],
        messages=body["messages"][:1],
        tools=body["tools"][:2],
    ) as s:
        final = s.get_final_message()
    tool = next(b for b in final.content if b.type == "tool_use")
    assert tool.name == "Tool0" and tool.input["path"]


@pytest.mark.parametrize("stream", [False, True])
def test_passthrough_to_anthropic_forwards_headers(
    gw: Gateway, ups: tuple[FakeOpenAI, FakeAnthropic], stream: bool
) -> None:
    _, fa = ups
    body = {**claude_code_body(stream), "model": "claude-sonnet-4-6"}
    status, data, _ = post(gw, body)
    assert status == 200, data
    sent = fa.last_request
    assert sent.headers["anthropic-beta"] == BETAS
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-api-key"] == "sk-ant-cc-0123456789"
    assert "X-Claude-Code-Session-Id" not in sent.headers
    assert sent.query_string == "beta=true"
    assert sent.json == body  # unchanged: the same bytes
    if stream:
        assert [k for k, _ in sse_events(data)][-1] == "message_stop"
