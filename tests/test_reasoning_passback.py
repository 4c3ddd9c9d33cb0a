"""DeepSeek thinking mode: Qiao restores reasoning_content that clients drop."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from conftest import CLIENT_KEY
from fakes.deepseek_thinking import FakeDeepSeek
from gateway import Gateway

from qiao.providers.reasoning import ReasoningMemory


@pytest.fixture(scope="module")
def ds() -> Iterator[FakeDeepSeek]:
    fake = FakeDeepSeek("sk-deepseek-upstream-key").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(ds: FakeDeepSeek) -> Iterator[Gateway]:
    config = f"""
providers:
  deepseek: {{type: deepseek, base_url: "{ds.base_url}", api_key: sk-deepseek-upstream-key}}
  plain: {{type: openai, base_url: "{ds.base_url}", api_key: sk-deepseek-upstream-key}}
models:
  deepseek-reasoner: [{{provider: deepseek}}]
  plain-reasoner: [{{provider: plain, model: deepseek-reasoner}}]
keys: [{{name: t, key: {CLIENT_KEY}}}]
"""
    with Gateway(config) as g:
        yield g


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def _second_turn(first_call: openai.types.chat.ChatCompletionMessageToolCall) -> list[dict]:
    # What many clients send: the assistant turn WITHOUT reasoning_content.
    return [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [first_call.model_dump()]},
        {"role": "tool", "tool_call_id": first_call.id, "content": "sunny"},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_dropped_reasoning_is_restored(gw: Gateway, ds: FakeDeepSeek, stream: bool) -> None:
    c = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    first = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        with c.chat.completions.stream(model="deepseek-reasoner", messages=first, tools=TOOLS) as s:
            call = s.get_final_completion().choices[0].message.tool_calls[0]
    else:
        r = c.chat.completions.create(model="deepseek-reasoner", messages=first, tools=TOOLS)
        call = r.choices[0].message.tool_calls[0]
    answer = c.chat.completions.create(
        model="deepseek-reasoner", messages=_second_turn(call), tools=TOOLS
    )
    assert answer.choices[0].message.content == "It is sunny."
    sent = ds.bodies[-1]["messages"][1]
    n = call.id.rsplit("_", 1)[1]
    assert sent["reasoning_content"] == f"Thought {n}: use the tool."


def test_without_the_quirk_the_upstream_refuses(gw: Gateway, ds: FakeDeepSeek) -> None:
    c = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    r = c.chat.completions.create(
        model="plain-reasoner", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS
    )
    with pytest.raises(openai.BadRequestError) as exc:
        c.chat.completions.create(
            model="plain-reasoner", messages=_second_turn(r.choices[0].message.tool_calls[0])
        )
    assert "reasoning_content" in exc.value.message


def test_memory_is_bounded() -> None:
    memory = ReasoningMemory(max_bytes=1000)
    for i in range(100):
        memory.remember([f"call_{i}"], "x" * 100)
    assert len(memory) == 10
    body = {"messages": [{"role": "assistant", "tool_calls": [{"id": "call_99"}]}]}
    assert memory.fill(body)["messages"][0]["reasoning_content"] == "x" * 100
    assert (
        memory.fill({"messages": [{"role": "assistant", "tool_calls": [{"id": "call_0"}]}]}) is None
    )
