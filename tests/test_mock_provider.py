"""The built-in mock provider, driven by the official openai SDK through a real gateway."""

from __future__ import annotations

import openai
import pytest
from conftest import CLIENT_KEY, LIMITED_KEY
from gateway import Gateway


def client(gw: Gateway, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10)


def test_chat_non_stream(mock_gateway: Gateway) -> None:
    raw = client(mock_gateway).chat.completions.with_raw_response.create(
        model="qiao-mock", messages=[{"role": "user", "content": "ping pong"}]
    )
    r = raw.parse()
    assert r.choices[0].message.content == "Hello from Qiao's mock provider. You said: ping pong"
    assert r.usage is not None and r.usage.completion_tokens == 9
    assert raw.headers["x-qiao-provider"] == "mock"
    assert raw.headers["x-request-id"].startswith("req_")
    assert float(raw.headers["x-qiao-overhead-ms"]) >= 0


def test_chat_stream_and_tool_call(mock_gateway: Gateway) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    with client(mock_gateway).chat.completions.stream(
        model="qiao-mock", messages=[{"role": "user", "content": "weather?"}], tools=tools
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"mock"}'
    assert final.choices[0].finish_reason == "tool_calls"


def test_stream_without_usage_request_gets_no_usage(mock_gateway: Gateway) -> None:
    chunks = list(
        client(mock_gateway).chat.completions.create(
            model="qiao-mock", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.endswith("You said: a b c")
    # ...while Qiao still recorded the usage it asked upstream for.
    mock_gateway.log.last()
    rec = [r for r in mock_gateway.log.records if r["stream"] and r["path"].endswith("completions")]
    assert rec[-1]["usage"]["output_tokens"] == 10


def test_completions_embeddings_responses(mock_gateway: Gateway) -> None:
    c = client(mock_gateway)
    assert c.completions.create(model="qiao-mock", prompt="Say").choices[0].text.endswith("Say")
    emb = c.embeddings.create(model="qiao-mock", input=["a", "b"])  # SDK asks for base64
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 16
    assert emb.data[0].embedding != emb.data[1].embedding
    with c.responses.stream(model="qiao-mock", input="hello") as s:
        final = s.get_final_response()
    assert final.output_text.endswith("You said: hello")


def test_models_list_follows_key_scope(mock_gateway: Gateway) -> None:
    assert {m.id for m in client(mock_gateway).models.list()} == {"qiao-mock", "gpt-4o-mini"}
    assert {m.id for m in client(mock_gateway, LIMITED_KEY).models.list()} == {"gpt-4o-mini"}
    assert client(mock_gateway).models.retrieve("gpt-4o-mini").owned_by == "mock"
    with pytest.raises(openai.NotFoundError):
        client(mock_gateway, LIMITED_KEY).models.retrieve("qiao-mock")


def test_key_scope_is_enforced(mock_gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client(mock_gateway, LIMITED_KEY).chat.completions.create(
            model="qiao-mock", messages=[{"role": "user", "content": "x"}]
        )
    assert exc.value.code == "model_not_allowed"
    ok = client(mock_gateway, LIMITED_KEY).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    assert ok.choices[0].message.content


def test_bad_and_missing_keys(mock_gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as exc:
        client(mock_gateway, "sk-qiao-test-client-kez").models.list()
    assert exc.value.code == "invalid_api_key"
    assert exc.value.request_id and exc.value.request_id.startswith("req_")
    assert "sk-qiao" not in mock_gateway.log.text


def test_unknown_model_is_404(mock_gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client(mock_gateway).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert exc.value.code == "model_not_found"


def test_admin_key_reaches_every_model(mock_gateway: Gateway) -> None:
    from conftest import ADMIN_KEY

    r = client(mock_gateway, ADMIN_KEY).chat.completions.create(
        model="qiao-mock", messages=[{"role": "user", "content": "x"}]
    )
    assert r.choices[0].message.content
    assert mock_gateway.log.last()["key"] == "admin"
