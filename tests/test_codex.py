"""Codex CLI's default request (Responses API) reaches providers that do not speak it.

Codex 0.171 declares its collaboration (and MCP) tools as a ``namespace`` tool and OpenAI's
built-in ``web_search``; both used to get 400 ``unsupported_parameter`` on every request to an
Anthropic or Gemini upstream. Here the request (tests/golden/codex_default_request.json) goes
through the openai SDK (strict response validation) to fake upstreams: namespaced functions go
up flat and their calls come back namespaced, non-streamed and streamed; web search becomes
Anthropic's own search tool, and is dropped with an ``x-qiao-dropped-tools`` header where the
target cannot run it (Gemini refuses search mixed with function calling) or the provider's
``web_search: drop`` setting says so.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import CLIENT_KEY
from fakes.anthropic_upstream import FakeAnthropic
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import FakeOpenAI
from gateway import Gateway

CODEX: dict[str, Any] = json.loads(
    (Path(__file__).parent / "golden" / "codex_default_request.json").read_text()
)
FLAT = "collaboration__spawn_agent"
DROPPED = "x-qiao-dropped-tools"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    with (
        FakeAnthropic(api_key="sk-ant-up-0123456789") as fa,
        FakeGemini(api_key="AIza-up-gemini-0123456789") as fg,
        FakeOpenAI(api_key="sk-up-openai-0123456789") as fo,
    ):
        yield {"anthropic": fa, "gemini": fg, "deepseek": fo}


@pytest.fixture(scope="module")
def gw(fakes: dict[str, Any]) -> Iterator[Gateway]:
    fa, fg, fo = fakes["anthropic"].url, fakes["gemini"].url, fakes["deepseek"].base_url
    config = f"""
providers:
  p-anthropic: {{type: anthropic, base_url: "{fa}", api_key: sk-ant-up-0123456789}}
  p-quiet: {{type: anthropic, base_url: "{fa}", api_key: sk-ant-up-0123456789, web_search: drop}}
  p-gemini: {{type: gemini, base_url: "{fg}", api_key: AIza-up-gemini-0123456789}}
  p-deepseek: {{type: deepseek, base_url: "{fo}", api_key: sk-up-openai-0123456789}}
models:
  codex-anthropic: [{{provider: p-anthropic, model: claude-sonnet-4-6}}]
  codex-quiet: [{{provider: p-quiet, model: claude-sonnet-4-6}}]
  codex-gemini: [{{provider: p-gemini, model: gemini-2.5-flash}}]
  codex-deepseek: [{{provider: p-deepseek, model: deepseek-chat}}]
keys: [{{name: t, key: {CLIENT_KEY}}}]
"""
    with Gateway(config) as g:
        yield g


@pytest.fixture
def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.base_url,
        api_key=CLIENT_KEY,
        max_retries=0,
        timeout=30,
        _strict_response_validation=True,
    )


def codex(model: str, prompt: str, stream: bool) -> dict[str, Any]:
    body = copy.deepcopy(CODEX)
    body["input"][-1]["content"][0]["text"] = prompt
    return body | {"model": model, "stream": stream}


def respond(client: openai.OpenAI, body: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    """(response headers, final response, stream events) of one Responses call."""
    raw = client.responses.with_raw_response.create(**body)
    if not body.get("stream"):
        return raw.headers, raw.parse(), []
    events = list(raw.parse())
    assert events[-1].type == "response.completed"
    return raw.headers, events[-1].response, events


def tool_names(fake: str, sent: dict[str, Any]) -> list[str]:
    """The function names an upstream was offered, in its own wire format."""
    if fake == "anthropic":
        return [t["name"] for t in sent["tools"] if "input_schema" in t]
    if fake == "gemini":
        return [d["name"] for t in sent["tools"] for d in t.get("functionDeclarations", [])]
    return [t["function"]["name"] for t in sent["tools"]]


TARGETS = pytest.mark.parametrize("target", ["anthropic", "gemini", "deepseek"])
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["nonstream", "stream"])


@TARGETS
@STREAM
def test_namespaced_tools_go_up_flat_and_calls_come_back_namespaced(
    client: openai.OpenAI, fakes: dict[str, Any], target: str, stream: bool
) -> None:
    body = codex(f"codex-{target}", f"start a helper with {FLAT} please", stream)
    headers, final, events = respond(client, body)
    assert final.status == "completed"
    call = next(o for o in final.output if o.type == "function_call")
    assert (call.namespace, call.name) == ("collaboration", "spawn_agent")
    assert set(json.loads(call.arguments)) == {"task_name", "message"}
    if stream:
        added = [e.item for e in events if e.type == "response.output_item.added"]
        assert [(i.namespace, i.name) for i in added if i.type == "function_call"] == [
            ("collaboration", "spawn_agent")
        ]
    sent = fakes[target].last_request.json
    names = tool_names(target, sent)
    assert FLAT in names and "exec_command" in names and "collaboration__send_message" in names
    assert '"namespace"' not in json.dumps(sent)
    searched = [t for t in sent["tools"] if t.get("type") == "web_search_20250305"]
    assert len(searched) == (target == "anthropic")
    assert headers.get(DROPPED) == (None if target == "anthropic" else "web_search")

    history = [
        *body["input"],
        *(o.model_dump(exclude_none=True) for o in final.output),
        {"type": "function_call_output", "call_id": call.call_id, "output": "agent started"},
    ]
    _, second, _ = respond(client, body | {"input": history, "stream": False})
    assert second.status == "completed" and second.output
    sent = json.dumps(fakes[target].last_request.json)
    assert FLAT in sent and '"namespace"' not in sent  # the history call went up flat


@STREAM
def test_web_search_is_anthropics_own_search(
    client: openai.OpenAI, fakes: dict[str, Any], stream: bool
) -> None:
    headers, final, _ = respond(client, codex("codex-anthropic", "search the web for qiao", stream))
    assert DROPPED not in headers
    assert [o.type for o in final.output if o.type != "reasoning"] == ["message"]
    assert final.output_text == "echo: search the web for qiao"
    sent = fakes["anthropic"].last_request.json
    assert {"type": "web_search_20250305", "name": "web_search"} in sent["tools"]


def test_web_search_setting_drop(client: openai.OpenAI, fakes: dict[str, Any]) -> None:
    headers, final, _ = respond(client, codex("codex-quiet", "search the web for qiao", True))
    assert headers[DROPPED] == "web_search" and final.status == "completed"
    assert all("input_schema" in t for t in fakes["anthropic"].last_request.json["tools"])


@STREAM
def test_web_search_alone_is_gemini_grounding(
    client: openai.OpenAI, fakes: dict[str, Any], stream: bool
) -> None:
    body = {
        "model": "codex-gemini",
        "input": "search the news",
        "tools": [{"type": "web_search", "filters": None}],
        "store": False,
        "stream": stream,
    }
    headers, final, _ = respond(client, body)
    assert DROPPED not in headers
    assert final.output_text == "echo: search the news"
    assert fakes["gemini"].last_request.json["tools"] == [{"googleSearch": {}}]
