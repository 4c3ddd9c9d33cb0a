"""Model names: one grammar where requests are read, and encoded path segments upstream.

Issue 8 item 2: names such as ``gemini-x/../gemini-ultra`` reached other upstream paths (a
scope bypass, another endpoint carrying the operator's key). Every upstream here is a
catch-all recorder on 127.0.0.1 that answers in its protocol, so a test sees exactly which
path a name reached, or that none was reached.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import quote

import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from fakes.cloud import Loopback
from gateway import Gateway

from qiao.errors import InvalidRequest
from qiao.modelname import check_model_name, segment

KEY = "sk-qiao-names-test-key-0123456789"
SCOPED = "sk-qiao-names-scoped-key-0123456789"


class Recorder(Loopback):
    """Any path, any method: records ``raw_path`` and answers a minimal success."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        super().__init__(app)
        self.paths: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        await request.read()
        if ":" in request.path.rsplit("/", 1)[-1]:  # Gemini
            return web.json_response(
                {
                    "candidates": [
                        {
                            "content": {"role": "model", "parts": [{"text": "ok"}]},
                            "finishReason": "STOP",
                        }
                    ],
                    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
                }
            )
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


@pytest.fixture(scope="module")
def up() -> Iterator[Recorder]:
    with Recorder() as r:
        yield r


@pytest.fixture(scope="module")
def gw(up: Recorder) -> Iterator[Gateway]:
    base = f"http://127.0.0.1:{up.port}"
    config = f"""
providers:
  gem: {{type: gemini, base_url: "{base}", api_key: AIza-names-upstream-0123456789}}
  az: {{type: azure, base_url: "{base}", api_version: "2024-10-21", api_key: az-upstream-key}}
  oa: {{type: openai, base_url: "{base}/v1", api_key: sk-names-upstream-0123456789}}
models:
  "gemini-*": [{{provider: gem}}]
  "az-*": [{{provider: az}}]
  odd-deployment: [{{provider: az, model: "dep?x=1#frag"}}]
keys:
  - {{name: all, key: {KEY}}}
  - {{name: scoped, key: {SCOPED}, models: ["gemini-*"]}}
"""
    with Gateway(config) as g:
        yield g


@pytest.fixture(autouse=True)
def _clear(up: Recorder) -> None:
    up.paths.clear()


def _chat(gw: Gateway, model: str, key: str = KEY) -> openai.BadRequestError:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    return info.value


@pytest.mark.parametrize(
    "model",
    [
        "gemini-x/../gemini-ultra-not-allowed",
        "gemini-x/../../../v1beta/files?upload=",
        "gemini-2.5-pro:generateContent#",
        "gemini-x/%2e%2e/gemini-ultra",
        "gemini-x/%2F..%2Fy",
        "az-x/../../../../evil?a=",
        "gemini-x\\..\\y",
        "gemini-x\n",
        "gemini x",
        "gemini-x//y",
        "/gemini-x",
        "gemini-" + "x" * 300,
    ],
)
def test_bad_names_are_refused_before_any_upstream(gw: Gateway, up: Recorder, model: str) -> None:
    for key in (KEY, SCOPED):
        err = _chat(gw, model, key)
        assert err.status_code == 400
        assert err.code == "invalid_model" and err.param == "model"
    assert up.paths == []


def test_scope_bypass_is_closed(gw: Gateway, up: Recorder) -> None:
    # The scoped key may use gemini-* models, and nothing reached past them.
    client = openai.OpenAI(base_url=gw.base_url, api_key=SCOPED, max_retries=0)
    reply = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "ok"
    assert up.paths == ["/v1beta/models/gemini-2.5-flash:generateContent"]


def test_gemini_surface_refuses_encoded_slashes(gw: Gateway, up: Recorder) -> None:
    for target in (
        "gemini-x%2F..%2Fgemini-ultra:generateContent",
        "gemini-x%2F..%2F..%2F..%2Fv1beta%2Ffiles:generateContent",
        "gemini-x%252F..:generateContent",  # decoded once only: '%' stays, and is refused
        "gemini-x%3Fa%3D1:generateContent",
    ):
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request(
            "POST",
            f"/v1beta/models/{target}",
            body=orjson.dumps({"contents": [{"parts": [{"text": "x"}]}]}),
            headers={"x-goog-api-key": SCOPED, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        body = orjson.loads(resp.read())
        conn.close()
        assert resp.status == 400, (target, body)
        assert body["error"]["status"] == "INVALID_ARGUMENT"
        assert "Invalid model name" in body["error"]["message"]
    assert up.paths == []


def test_anthropic_surface_uses_the_same_grammar(gw: Gateway, up: Recorder) -> None:
    client = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(
            model="gemini-x/../y", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert "Invalid model name" in str(info.value)
    assert up.paths == []


def test_valid_names_with_slashes_colons_and_at(gw: Gateway, up: Recorder) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
    for model in ("oa/deepseek-ai/DeepSeek-V3", "oa/ft:gpt-4o:org:abc", "oa/claude@2025+x"):
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}]
        )
        assert reply.choices[0].message.content == "ok"
    assert up.paths == ["/v1/chat/completions"] * 3


def test_configured_targets_are_encoded_too(gw: Gateway, up: Recorder) -> None:
    # An operator's odd deployment name stays one path segment: '?' and '#' are escaped.
    client = openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
    client.chat.completions.create(
        model="odd-deployment", messages=[{"role": "user", "content": "x"}]
    )
    assert up.paths == [
        "/openai/deployments/dep%3Fx=1%23frag/chat/completions?api-version=2024-10-21"
    ]


def test_a_colon_never_reaches_a_gemini_path(gw: Gateway, up: Recorder) -> None:
    err = _chat(gw, "gemini-2.5-pro:streamGenerateContent")
    assert "cannot contain ':'" in str(err)
    assert up.paths == []


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-mini",
        "deepseek-ai/DeepSeek-V3",
        "Pro/deepseek-ai/DeepSeek-R1",
        "ft:gpt-4o-mini:my-org::abc123",
        "qwen3:8b",
        "claude-3-5-sonnet@20240620",
        "models/gemini-2.5-pro",
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    ],
)
def test_grammar_accepts(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/..",
        "../a",
        "a/./b",
        "a//b",
        "a/",
        "a?b",
        "a#b",
        "a%2Fb",
        "a b",
        "a\x00",
        "ａ",
    ],
)
def test_grammar_refuses(name: str) -> None:
    with pytest.raises(InvalidRequest):
        check_model_name(name)


def test_segment_escapes_everything_that_steers_a_path() -> None:
    assert segment("a/b?c#d%e f") == quote("a/b?c#d%e f", safe="")
    assert segment("claude@1:0") == "claude@1:0"
    for bad in (".", "..", ""):
        with pytest.raises(InvalidRequest):
            segment(bad)
    with pytest.raises(InvalidRequest):
        segment("a:b", colon=False)
