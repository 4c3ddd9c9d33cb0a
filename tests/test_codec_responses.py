"""The OpenAI Responses codec (client role): Codex-like request bodies, the refuse/drop rules,
and answers and streams parsed by the official openai SDK with strict validation."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from qiao.canonical import (
    Choice,
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
from qiao.codecs.responses import (
    DROPPED,
    REFUSED,
    StreamEncoder,
    decode_request,
    encode_response,
    error_body,
)
from qiao.errors import InvalidRequest

SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Runs a shell command.",
    "parameters": {
        "type": "object",
        "properties": {"command": {"type": "array", "items": {"type": "string"}}},
        "required": ["command"],
    },
    "strict": False,
}

CODEX: dict[str, Any] = {
    "model": "claude-sonnet",
    "instructions": "You are Codex.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "sandbox"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "list files"}],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "I should run ls."}],
            "content": None,
            "encrypted_content": "sig-abc",
        },
        {
            "type": "function_call",
            "name": "shell",
            "arguments": '{"command":["ls"]}',
            "call_id": "call_1",
        },
        {
            "type": "function_call",
            "name": "shell",
            "arguments": '{"command":["pwd"]}',
            "call_id": "call_2",
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\nb.txt"},
        {"type": "function_call_output", "call_id": "call_2", "output": "/work"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Two files."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
    ],
    "tools": [SHELL],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "session-1",
    "text": {"verbosity": "medium"},
}


# ----------------------------------------------------------------------------- decode


def test_decode_codex_request() -> None:
    req = decode_request(CODEX)
    assert req.model == "claude-sonnet"
    assert req.stream is True and req.stream_usage is True
    assert req.system == [Text("You are Codex."), Text("sandbox")]
    assert req.messages == [
        Message("user", [Text("list files")]),
        Message(
            "assistant",
            [
                Reasoning("I should run ls.", signature="sig-abc"),
                ToolCall("call_1", "shell", '{"command":["ls"]}'),
                ToolCall("call_2", "shell", '{"command":["pwd"]}'),
            ],
        ),
        Message("tool", [ToolResult("call_1", [Text("a.txt\nb.txt")])]),
        Message("tool", [ToolResult("call_2", [Text("/work")])]),
        Message("assistant", [Text("Two files.")]),
        Message("user", [Text("thanks")]),
    ]
    assert req.tools == [
        Tool("shell", "Runs a shell command.", SHELL["parameters"], strict=False)  # type: ignore[arg-type]
    ]
    assert req.tool_choice == ToolChoice("auto", parallel=False)
    assert req.reasoning == ReasoningConfig(enabled=True, effort="medium")


def test_decode_parameters_and_parts() -> None:
    body = {
        "model": "m",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBORw0KGgo=",
                        "detail": "low",
                    },
                    {"type": "input_image", "image_url": "https://x/y.png"},
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": "data:application/pdf;base64,JVBERi0=",
                    },
                ],
            },
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "system", "content": "late system"},
        ],
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "x",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "tool_choice": {"type": "function", "name": "shell"},
        "safety_identifier": "u1",
        "user": "u0",
        "metadata": {"k": "v"},
        "reasoning": {"effort": "none"},
    }
    req = decode_request(body, stream=False)
    user = req.messages[0].parts
    assert user[0] == Text("look")
    assert user[1] == Image(media_type="image/png", data="iVBORw0KGgo=", detail="low")
    assert user[2] == Image(url="https://x/y.png")
    assert user[3].title == "a.pdf" and user[3].media_type == "application/pdf"  # type: ignore[union-attr]
    assert req.messages[1] == Message("assistant", [Text("no")])
    assert req.messages[2] == Message("system", [Text("late system")])
    assert (req.max_tokens, req.temperature, req.top_p) == (100, 0.5, 0.9)
    assert req.response_format == ResponseFormat("json_schema", {"type": "object"}, "x", True)
    assert req.tool_choice == ToolChoice("tool", name="shell")
    assert req.user == "u1" and req.metadata == {"k": "v"}
    assert req.reasoning == ReasoningConfig(enabled=False)
    assert decode_request({"model": "m", "input": "hi"}).messages == [Message("user", [Text("hi")])]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, "tools[0].type"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "namespace", "name": "n", "tools": [{"type": "custom"}]}]},
            "tools[0].tools[0].type",
        ),
        ({"tools": [{"type": "namespace", "tools": []}]}, "tools[0].name"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"type": "computer_call", "id": "c"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"input": 3}, "input"),
        ({"max_output_tokens": "x"}, "max_output_tokens"),
    ],
)
def test_decode_refuses(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        decode_request({"model": "m", "input": "hi", **extra})
    assert info.value.param == param


def test_stateless_message_is_clear() -> None:
    with pytest.raises(InvalidRequest, match="full history") as info:
        decode_request({"model": "m", "input": "hi", "previous_response_id": "resp_1"})
    status, body = error_body(info.value)
    assert status == 400
    assert body["error"]["param"] == "previous_response_id"
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "extra",
    [
        {"store": False},
        {"store": True},
        {"include": ["reasoning.encrypted_content"]},
        {"truncation": "auto"},
        {"service_tier": "priority"},
        {"prompt_cache_key": "k"},
        {"background": False},
        {"previous_response_id": None},
        {"some_vendor_knob": 1},
    ],
)
def test_decode_drops(extra: dict[str, Any]) -> None:
    assert decode_request({"model": "m", "input": "hi", **extra}).messages[0].parts == [Text("hi")]


def test_refuse_and_drop_tables_are_disjoint() -> None:
    assert not set(REFUSED) & DROPPED


# ----------------------------------------------------------------------------- the real SDK


class Server:
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

    def __enter__(self) -> Server:
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
        app.router.add_post("/v1/responses", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append(await request.json())
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1",
        api_key="x",
        max_retries=0,
        _strict_response_validation=True,
    )


USAGE = Usage(input_tokens=20, output_tokens=9, cache_read_tokens=5, reasoning_tokens=3)


def test_sdk_create_parses_response(server: Server, client: openai.OpenAI) -> None:
    answer = Response(
        id="abc",
        model="claude-sonnet",
        created=1700000000,
        choices=[
            Choice(
                0,
                Message(
                    "assistant",
                    [
                        Reasoning("thinking hard", signature="sig-1"),
                        Text("Hel"),
                        Text("lo"),
                        ToolCall("call_1", "shell", '{"command":["ls"]}'),
                    ],
                ),
                "tool_calls",
            )
        ],
        usage=USAGE,
    )
    body = encode_response(answer)
    server.reply(orjson.dumps(body))
    resp = client.responses.create(model="claude-sonnet", input="hi")
    assert resp.id == "resp_abc" and resp.object == "response" and resp.status == "completed"
    assert resp.output_text == "Hello"
    kinds = [item.type for item in resp.output]
    assert kinds == ["reasoning", "message", "function_call"]
    reasoning = resp.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == "thinking hard"
    assert reasoning.encrypted_content == "sig-1"
    call = resp.output[2]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "shell", '{"command":["ls"]}')
    assert call.id is not None and call.id.startswith("fc_")
    assert resp.usage is not None
    assert resp.usage.input_tokens == 20 and resp.usage.output_tokens == 9
    assert resp.usage.total_tokens == 29
    assert resp.usage.input_tokens_details.cached_tokens == 5
    assert resp.usage.output_tokens_details.reasoning_tokens == 3


def test_sdk_create_incomplete_for_length(server: Server, client: openai.OpenAI) -> None:
    answer = Response("x", "m", [Choice(0, Message("assistant", [Text("cut")]), "length")], USAGE)
    server.reply(orjson.dumps(encode_response(answer)))
    resp = client.responses.create(model="m", input="hi")
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text == "cut"


def test_history_round_trip_keeps_signatures() -> None:
    """What we answer, the client sends back as input; it decodes to the same parts."""
    parts: list[Part] = [
        Reasoning("r", signature="sig-1"),
        Reasoning(redacted="opaque"),
        Text("hi"),
        ToolCall("call_1", "f", "{}", signature="gem-sig"),
        ToolCall("call_2", "f", '{"a":1}'),
    ]
    body = encode_response(Response("x", "m", [Choice(0, Message("assistant", parts))]))
    req = decode_request({"model": "m", "input": body["output"]})
    assert req.messages == [Message("assistant", parts)]


def stream_bytes(
    request: Request, events: list[Event], *, fail: StreamError | None = None
) -> bytes:
    encoder = StreamEncoder(request)
    out = b"".join(encoder.feed(e) for e in events)
    return out + (encoder.fail(fail) if fail is not None else encoder.close())


def sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in data.decode().split("\n\n"):
        if block:
            event, payload = block.split("\n")
            assert event.startswith("event: ") and payload.startswith("data: ")
            obj = orjson.loads(payload[6:])
            assert obj["type"] == event[7:]
            out.append((event[7:], obj))
    return out


STREAM: list[Event] = [
    StreamStart("abc", "claude-sonnet", 1700000000, Usage(input_tokens=20)),
    ReasoningDelta("Let me "),
    ReasoningDelta("think."),
    ReasoningDelta(signature="sig-1"),
    TextDelta("Hel"),
    TextDelta("lo"),
    ToolCallStart("call_1", "shell", 0),
    ToolCallDelta('{"command":', 0),
    ToolCallStart("call_2", "shell", 1),
    ToolCallDelta('{"command":["pwd"]}', 1),
    ToolCallDelta('["ls"]}', 0),
    Finish("tool_calls"),
    UsageEvent(USAGE),
]


def test_stream_sequence_is_strict() -> None:
    request = decode_request({"model": "m", "input": "hi", "stream": True})
    events = sse(stream_bytes(request, STREAM))
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-1] == "response.completed"
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    assert (
        kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 4
    )
    assert "response.reasoning_summary_part.added" in kinds
    assert "response.content_part.done" in kinds
    ids = {e["response"]["id"] for k, e in events if "response" in e}
    assert ids == {"resp_abc"}
    final = events[-1][1]["response"]
    assert final["usage"]["total_tokens"] == 29


def test_sdk_stream_final_response(server: Server, client: openai.OpenAI) -> None:
    request = decode_request({"model": "claude-sonnet", "input": "hi", "stream": True})
    server.reply(stream_bytes(request, STREAM), "text/event-stream")
    with client.responses.stream(model="claude-sonnet", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Hel", "lo"]
    assert final.id == "resp_abc" and final.status == "completed"
    assert final.output_text == "Hello"
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.summary[0].text == "Let me think."
    assert reasoning.encrypted_content == "sig-1"
    calls = [(o.call_id, o.arguments) for o in final.output if o.type == "function_call"]
    assert calls == [("call_1", '{"command":["ls"]}'), ("call_2", '{"command":["pwd"]}')]
    assert final.usage is not None and final.usage.output_tokens == 9
    assert final.usage.input_tokens_details.cached_tokens == 5


def test_sdk_stream_text_only_without_start(server: Server, client: openai.OpenAI) -> None:
    request = decode_request({"model": "m", "input": "hi", "stream": True, "temperature": 0.2})
    server.reply(stream_bytes(request, [TextDelta("ok"), Finish("stop")]), "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "ok" and final.temperature == 0.2
    assert final.id.startswith("resp_")


def test_sdk_stream_incomplete_for_length(server: Server, client: openai.OpenAI) -> None:
    request = decode_request({"model": "m", "input": "hi", "stream": True})
    events: list[Event] = [StreamStart("abc", "m"), TextDelta("cut"), Finish("length")]
    server.reply(stream_bytes(request, events), "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        seen = list(stream)
    last = seen[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"


def test_sdk_stream_error_event(server: Server, client: openai.OpenAI) -> None:
    request = decode_request({"model": "m", "input": "hi", "stream": True})
    err = StreamError("upstream overloaded", status=503, type="server_error", code="overloaded")
    data = stream_bytes(request, [StreamStart("abc", "m"), TextDelta("par")], fail=err)
    assert b"response.completed" not in data
    server.reply(data, "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        seen = list(stream)
    last = seen[-1]
    assert last.type == "error"
    assert (last.code, last.message, last.param) == ("overloaded", "upstream overloaded", None)
    with pytest.raises(RuntimeError):
        stream.get_final_response()


def test_stream_after_close_or_fail_is_silent() -> None:
    encoder = StreamEncoder(Request("m"))
    encoder.feed(TextDelta("x"))
    assert encoder.fail(StreamError("boom")) != b""
    assert encoder.feed(TextDelta("y")) == b"" and encoder.close() == b""


def test_sdk_stream_call_signature_and_empty_stream(server: Server, client: openai.OpenAI) -> None:
    """A Gemini call signature rides in a reasoning item before the call and comes back."""
    request = decode_request({"model": "m", "input": "hi", "stream": True})
    events: list[Event] = [
        ReasoningDelta("plan"),
        ToolCallStart("call_1", "f", 0, signature="gem-sig"),
        ToolCallDelta("{}", 0),
        Finish("tool_calls"),
    ]
    server.reply(stream_bytes(request, events), "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        final = stream.get_final_response()
    assert [o.type for o in final.output] == ["reasoning", "reasoning", "function_call"]
    history = [o.model_dump(exclude_none=True) for o in final.output]
    back = decode_request({"model": "m", "input": history})
    assert back.messages == [
        Message("assistant", [Reasoning("plan"), ToolCall("call_1", "f", "{}", "gem-sig")])
    ]
    server.reply(stream_bytes(request, []), "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        empty = stream.get_final_response()
    assert empty.output == [] and empty.status == "completed"


# ----------------------------------------------------------------------------- Codex's tools


def _fn(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": {"type": "object"}}


def _ns(namespace: str, *names: str) -> dict[str, Any]:
    return {
        "type": "namespace",
        "name": namespace,
        "description": "d",
        "tools": [_fn(n) for n in names],
    }


def test_namespace_tools_are_flattened() -> None:
    body = {"model": "m", "input": "hi", "tools": [_fn("shell"), _ns("mcp__git", "log", "diff")]}
    req = decode_request(body)
    assert [t.name for t in req.tools] == ["shell", "mcp__git__log", "mcp__git__diff"]
    assert req.tool_namespaces == {
        "mcp__git__log": ("mcp__git", "log"),
        "mcp__git__diff": ("mcp__git", "diff"),
    }
    assert (
        decode_request({"model": "m", "input": "hi", "tools": [_fn("a")]}).tool_namespaces is None
    )


@pytest.mark.parametrize(
    ("tools", "namespace", "name"),
    [
        ([_fn("ns__f")], "ns", "f"),  # taken by a plain function
        ([], "n" * 40, "f" * 40),  # too long
        ([], "my.server", "get:thing"),  # characters providers refuse
        ([], "9lives", "f"),  # must start with a letter or _
    ],
)
def test_flat_names_fit_every_provider(tools: list[Any], namespace: str, name: str) -> None:
    body = {"model": "m", "input": "hi", "tools": [*tools, _ns(namespace, name)]}
    req = decode_request(body)
    flat = req.tools[-1].name
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,63}", flat)
    assert flat not in [t["name"] for t in tools]
    assert req.tool_namespaces == {flat: (namespace, name)}


def test_history_calls_and_tool_choice_use_the_flat_name() -> None:
    call = {"type": "function_call", "namespace": "collab", "name": "spawn", "call_id": "c1"}
    body = {
        "model": "m",
        "input": [{"role": "user", "content": "go"}, call | {"arguments": "{}"}],
        "tools": [_ns("collab", "spawn")],
        "tool_choice": {"type": "function", "namespace": "collab", "name": "spawn"},
    }
    req = decode_request(body)
    assert req.messages[1] == Message("assistant", [ToolCall("c1", "collab__spawn", "{}")])
    assert req.tool_choice == ToolChoice("tool", name="collab__spawn")


def test_web_search_tool_and_history_items() -> None:
    search = {
        "type": "web_search",
        "external_web_access": False,
        "filters": {"allowed_domains": ["python.org"]},
        "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
    }
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "news?"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {}},
            {"role": "assistant", "content": "Calm."},
        ],
        "tools": [search],
    }
    req = decode_request(body)
    assert req.tools == []
    assert req.web_search == WebSearch(["python.org"], {"city": "Paris", "country": "FR"})
    assert req.messages == [Message("user", [Text("news?")]), Message("assistant", [Text("Calm.")])]
    assert decode_request({"model": "m", "input": "x"}).web_search is None


NAMESPACED = Request(model="m", tool_namespaces={"collab__spawn": ("collab", "spawn")})


def test_calls_are_named_back_non_streamed(server: Server, client: openai.OpenAI) -> None:
    calls: list[Part] = [ToolCall("c1", "collab__spawn", "{}"), ToolCall("c2", "shell", "{}")]
    answer = Response("x", "m", [Choice(0, Message("assistant", calls), "tool_calls")], USAGE)
    server.reply(orjson.dumps(encode_response(answer, NAMESPACED)))
    resp = client.responses.create(model="m", input="hi")
    named = [(o.namespace, o.name) for o in resp.output if o.type == "function_call"]
    assert named == [("collab", "spawn"), (None, "shell")]
    plain = encode_response(answer)["output"][0]
    assert plain["name"] == "collab__spawn" and "namespace" not in plain


def test_calls_are_named_back_streamed(server: Server, client: openai.OpenAI) -> None:
    events: list[Event] = [
        StreamStart("abc", "m", 1700000000),
        ToolCallStart("c1", "collab__spawn", call_index=0),
        ToolCallDelta('{"a":1}', call_index=0),
        Finish("tool_calls"),
    ]
    server.reply(stream_bytes(NAMESPACED, events), "text/event-stream")
    with client.responses.stream(model="m", input="hi") as s:
        seen = [e for e in s if e.type.startswith("response.output_item.")]
        final = s.get_final_response()
    assert [(e.item.namespace, e.item.name) for e in seen] == [("collab", "spawn")] * 2
    call = final.output[0]
    assert call.type == "function_call" and (call.namespace, call.name) == ("collab", "spawn")
