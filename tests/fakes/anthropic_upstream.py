"""A fake Anthropic Messages API upstream for tests.

Speaks the wire format of docs ``protocols.md`` §3 (messages, streaming events, count_tokens,
models, errors), replies deterministically ("echo: <last user text>"), records every request and
injects faults keyed by the request's ``model``. It reuses the server machinery, ``Fault`` and
``RecordedRequest`` of the fake OpenAI upstream, so both fakes are driven the same way::

    with FakeAnthropic(api_key="sk-ant-fake-123") as fake:
        client = Anthropic(api_key="sk-ant-fake-123", base_url=fake.url)
        fake.set_fault("m-busy", Fault("status", status=529, times=1))
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .openai_upstream import (
    _CTX,
    REPLY_MAX_CHARS,
    FakeOpenAI,
    Fault,
    Handler,
    Json,
    RecordedRequest,
    _Ctx,
    fragments,
    mask_key,
    named_first,
    pieces,
    reply_for,
    sse,
    tool_arguments,
    words,
)

__all__ = ["FakeAnthropic", "Fault", "RecordedRequest", "input_tokens", "signature_for"]

DEFAULT_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-8")
MODEL_CREATED_AT = "2025-09-29T00:00:00Z"
NEW_VERSION = "2026-10-21"  # the anthropic-version that removed temperature/top_p/top_k
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
ROLES = ("user", "assistant", "system")
MESSAGES, COUNT_TOKENS = "/v1/messages", "/v1/messages/count_tokens"
MALFORMED_EVENT = b"event: content_block_delta\ndata: {not json\n\n"
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}  # the one server tool known
SEARCH_RESULT_URL = "https://example.com/fake-search-result"
_OPENAI_HEADERS = ("x-request-id", "openai-version", "openai-processing-ms", "openai-organization")
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: {model}"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error",
          "This request would exceed the rate limit for your organization of 50 requests per "
          "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}  # fmt: skip


# ---------------------------------------------------------------------------- helpers


def error_body(type_: str, message: str, request_id: str | None = None) -> Json:
    body: Json = {"type": "error", "error": {"type": type_, "message": message}}
    return body | ({"request_id": request_id} if request_id else {})


def default_error(status: int, model: str | None = None) -> tuple[str, str]:
    """(error.type, message) the real API would send for ``status``."""
    fallback = ("api_error" if status >= 500 else "invalid_request_error", f"HTTP {status}")
    type_, message = _ERRORS.get(status, fallback)
    return type_, message.replace("{model}", model or "unknown")


def request_id(rid: int) -> str:
    return f"req_fake{rid:016d}"


def block_text(content: Any) -> str:
    """Text of a str | [blocks] content: text blocks and (nested) tool_result contents."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [
        b["text"] if isinstance(b.get("text"), str) else block_text(b.get("content"))
        for b in content
        if isinstance(b, dict)
    ]
    return " ".join(p for p in parts if p)


def _messages(body: Json) -> list[Json]:
    return [m for m in body.get("messages") or [] if isinstance(m, dict)]


def input_tokens(body: Json) -> int:
    """Words in ``system`` plus every message's text (also what count_tokens returns)."""
    texts = [block_text(body.get("system"))] + [
        block_text(m.get("content")) for m in _messages(body)
    ]
    return sum(words(t) for t in texts)


def signature_for(thinking: str) -> str:
    return base64.b64encode(hashlib.sha256(b"sig:" + thinking.encode()).digest()).decode()


def display_name(model_id: str) -> str:
    """'claude-sonnet-4-6' -> 'Claude Sonnet 4.6' (date suffixes dropped)."""
    parts = model_id.split("-")
    nums = [p for p in parts if p.isdigit() and len(p) < 8]
    names = [p.title() for p in parts if not p.isdigit()]
    return " ".join(names + ([".".join(nums)] if nums else []))


def model_info(model_id: str) -> Json:
    return {
        "type": "model",
        "id": model_id,
        "display_name": display_name(model_id),
        "created_at": MODEL_CREATED_AT,
        "lifecycle": "active",  # required by the 2.14 SDK's strict validation
        "max_input_tokens": 200000,
        "max_tokens": 64000,
    }


def validate(path: str, body: Any, version: str) -> str | None:
    """The 400 message the real API would give for this body, or None when it is fine."""
    if not isinstance(body, dict):
        return "There was an error parsing the body of your request: expected a JSON object."
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if path == MESSAGES:
        if "max_tokens" not in body:
            return "max_tokens: Field required"
        if not isinstance(body["max_tokens"], int) or isinstance(body["max_tokens"], bool):
            return "max_tokens: Input should be a valid integer"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages: Field required"
    if not messages:
        return "messages: at least one message is required"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            return f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
    if path == MESSAGES and version >= NEW_VERSION:
        for name in SAMPLING_PARAMS:
            if name in body:
                return f"{name}: Extra inputs are not permitted"
    return validate_tools(body.get("tools"))


def validate_tools(tools: Any) -> str | None:
    """Custom tools need a name and an input_schema; of the server tools only web search is
    known here; names must be unique (the real API's 400 messages)."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "tools: Input should be a valid list"
    for i, tool in enumerate(tools):
        kind = tool.get("type", "custom") if isinstance(tool, dict) else None
        if kind == "custom" and not isinstance(tool.get("input_schema"), dict):
            return f"tools.{i}.custom.input_schema: Field required"
        if kind == WEB_SEARCH["type"] and tool.get("name") != WEB_SEARCH["name"]:
            return f"tools.{i}.{kind}.name: Input should be 'web_search'"
        if kind not in ("custom", WEB_SEARCH["type"]):
            return (
                f"tools.{i}: Input tag '{kind}' found using 'type' does not match any of the "
                f"expected tags: 'custom', '{WEB_SEARCH['type']}'"
            )
    names = [t.get("name") for t in tools]
    return "tools: Tool names must be unique." if len(set(names)) != len(names) else None


# ---------------------------------------------------------------------------- messages


@dataclass
class Plan:
    """The reply to a /v1/messages request: final content blocks plus stop and usage data."""

    blocks: list[Json]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int


def pick_tool(tools: Any, choice: Any, text: str = "") -> tuple[str, Json] | None:
    """(name, input_schema) of the custom tool to call, honouring tool_choice none/tool; the one
    the user's text names, else the first."""
    if not isinstance(tools, list) or (isinstance(choice, dict) and choice.get("type") == "none"):
        return None
    custom = named_first([
        t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
        and isinstance(t.get("input_schema"), dict)
    ], text)  # fmt: skip
    if isinstance(choice, dict) and choice.get("type") == "tool":
        custom = [t for t in custom if t["name"] == choice.get("name")] or custom
    return (custom[0]["name"], custom[0]["input_schema"]) if custom else None


def _reply_text(body: Json, last: str) -> tuple[str, str, str | None]:
    """(text, stop_reason, stop_sequence) honouring stop_sequences and max_tokens (in words)."""
    text, stop, seq = reply_for(last), "end_turn", None
    stops = body.get("stop_sequences")
    hits = [(text.find(s), s) for s in stops or [] if isinstance(s, str) and s and s in text]
    if hits:
        pos, seq = min(hits)
        text, stop = text[:pos], "stop_sequence"
    parts, limit = pieces(text), body.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < len(parts):
        text, stop, seq = "".join(parts[:limit]), "max_tokens", None
    return text, stop, seq


def plan_message(body: Json, rid: int) -> Plan:
    users = [block_text(m.get("content")) for m in _messages(body) if m.get("role") == "user"]
    last = users[-1] if users else ""
    blocks: list[Json] = []
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        thought = ("Thinking about: " + last)[:REPLY_MAX_CHARS].rstrip()
        shown = "" if thinking.get("display") == "omitted" else thought
        blocks.append({"type": "thinking", "thinking": shown, "signature": signature_for(thought)})
        thought_words = words(thought)  # billed even when the display is omitted
    else:
        thought_words = 0
    tool = pick_tool(body.get("tools"), body.get("tool_choice"), last)
    if "search" in last and has_web_search(body.get("tools")):
        blocks += web_search_blocks(last, rid)
        text, stop, seq = _reply_text(body, last)
        blocks.append({"type": "text", "text": text, "citations": [citation()]})
        out = words(text)
    elif tool:
        args = tool_arguments(tool[1], last)
        blocks.append(
            {"type": "tool_use", "id": f"toolu_fake{rid}", "name": tool[0]}
            | {"input": orjson.loads(args)}
        )
        stop, seq, out = "tool_use", None, words(args)
    else:
        text, stop, seq = _reply_text(body, last)
        blocks.append({"type": "text", "text": text})
        out = words(text)
    return Plan(blocks, stop, seq, input_tokens(body), out + thought_words)


def has_web_search(tools: Any) -> bool:
    return isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") == WEB_SEARCH["type"] for t in tools
    )


def web_search_blocks(query: str, rid: int) -> list[Json]:
    """What Anthropic's web search puts before its answer: the search and its results."""
    result = {"type": "web_search_result", "url": SEARCH_RESULT_URL, "title": "Fake result"}
    result |= {"encrypted_content": "ZmFrZQ==", "page_age": "April 1, 2026"}
    call = {"type": "server_tool_use", "id": f"srvtoolu_fake{rid}", "name": "web_search"}
    return [
        call | {"input": {"query": query}},
        {"type": "web_search_tool_result", "tool_use_id": call["id"], "content": [result]},
    ]


def citation() -> Json:
    return {
        "type": "web_search_result_location",
        "url": SEARCH_RESULT_URL,
        "title": "Fake result",
        "encrypted_index": "ZmFrZQ==",
        "cited_text": "fake",
    }


def usage(inp: int, out: int, searches: int = 0) -> Json:
    body: Json = {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    return body | ({"server_tool_use": {"web_search_requests": searches}} if searches else {})


def message_object(body: Json, rid: int, plan: Plan) -> Json:
    return {
        "id": f"msg_fake{rid}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": plan.blocks,
        "stop_reason": plan.stop_reason,
        "stop_sequence": plan.stop_sequence,
        "usage": usage(plan.input_tokens, plan.output_tokens, searches(plan)),
    }


def searches(plan: Plan) -> int:
    return sum(b["type"] == "server_tool_use" for b in plan.blocks)


def _block_events(index: int, block: Json) -> list[Json]:
    """content_block_start, its deltas and content_block_stop for one final block."""
    if block["type"] == "thinking":
        start: Json = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
        deltas = [d for d in deltas if d["thinking"]]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif block["type"] in ("tool_use", "server_tool_use"):
        start = block | {"input": {}}
        args = orjson.dumps(block["input"]).decode()
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in ["", *fragments(args)]]
    elif block["type"] == "web_search_tool_result":
        start, deltas = block, []
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "citations_delta", "citation": c} for c in block.get("citations", [])]
        deltas += [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
    where = {"index": index}
    return [
        {"type": "content_block_start"} | where | {"content_block": start},
        *({"type": "content_block_delta"} | where | {"delta": d} for d in deltas),
        {"type": "content_block_stop"} | where,
    ]


def stream_events(body: Json, rid: int) -> list[Json]:
    """The full §3.4 event sequence; ``message_stop`` is last."""
    plan = plan_message(body, rid)
    start = message_object(body, rid, plan)
    start |= {"content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = usage(plan.input_tokens, 1)
    events: list[Json] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(plan.blocks):
        block_events = _block_events(index, block)
        if index == 0:  # the real API pings right after the first content_block_start
            block_events.insert(1, {"type": "ping"})
        events += block_events
    delta = {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence}
    events.append(
        {"type": "message_delta", "delta": delta}
        | {"usage": usage(plan.input_tokens, plan.output_tokens, searches(plan))}
    )
    events.append({"type": "message_stop"})
    return events


# ---------------------------------------------------------------------------- server


class FakeAnthropic(FakeOpenAI):
    """Fake Anthropic upstream. ``start()``/``stop()`` or use as a context manager.

    Shares the public API of ``FakeOpenAI`` (``url``, ``requests``, ``last_request``,
    ``requests_for``, ``set_fault``, ``clear_faults``, ``reset``, ``active``, ``cancelled``,
    ``wait_until``); ``base_url`` is the bare ``url`` as the Anthropic SDK wants it.
    """

    def __init__(
        self, api_key: str = "sk-ant-fake-0123456789abcdef", *, models: list[str] | None = None
    ) -> None:
        super().__init__(api_key, models=list(models or DEFAULT_MODELS))

    @property
    def base_url(self) -> str:
        return self.url

    def betas(self, rec: RecordedRequest | None = None) -> list[str]:
        """The ``anthropic-beta`` list of ``rec`` (default: the last request)."""
        raw = (rec or self.last_request).headers.get("anthropic-beta", "")
        return [b.strip() for b in raw.split(",") if b.strip()]

    def start(self) -> FakeAnthropic:
        super().start()
        return self

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    # -- loop thread -----------------------------------------------------------------

    async def _setup(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 2**20)
        app.on_response_prepare.append(self._on_prepare)
        app.router.add_post(MESSAGES, self._messages)
        app.router.add_post(COUNT_TOKENS, self._count_tokens)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{id:.+}", self._get_model)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Swap the OpenAI headers the shared send helpers add for Anthropic's."""
        for name in _OPENAI_HEADERS:
            response.headers.popall(name, None)
        ctx = request.get(_CTX)
        response.headers["request-id"] = request_id(ctx.rid if ctx else 0)
        response.headers["anthropic-organization-id"] = "org-fake"

    async def _guarded(
        self, request: web.Request, handler: Handler, ctx: _Ctx
    ) -> web.StreamResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        version = request.headers.get("anthropic-version")
        if not version:
            return self._error(request, 400, "anthropic-version: header is required")
        body = ctx.body
        if request.method == "POST" and request.path in (MESSAGES, COUNT_TOKENS):
            if (problem := validate(request.path, body, version)) is not None:
                return self._error(request, 400, problem)
        model = body.get("model") if isinstance(body, dict) else None
        fault = ctx.fault = self._take_fault(model)
        if fault and fault.kind == "stall_before_first_byte":
            await asyncio.sleep(fault.delay)
        if fault and fault.kind == "status":
            return self._status_fault_for(request, fault, model)
        if fault and fault.kind == "error_echo_key":
            key = self._presented_key(request) or ""
            return self._error(request, 401, f"invalid x-api-key: {mask_key(key)}")
        return await handler(request)

    def _presented_key(self, request: web.Request) -> str | None:
        """``x-api-key`` wins over ``Authorization: Bearer`` (as the real API)."""
        if key := request.headers.get("x-api-key"):
            return key
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() != "bearer ":
            return None
        return auth[7:].strip() or None

    def _check_auth(self, request: web.Request) -> web.Response | None:
        key = self._presented_key(request)
        if not key:
            return self._error(request, 401, "x-api-key header is required")
        return None if key == self.api_key else self._error(request, 401, "invalid x-api-key")

    def _error(
        self,
        request: web.Request,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        type_, default = default_error(status)
        rid = request_id(request[_CTX].rid)
        body = error_body(type_, message or default, rid)
        return web.Response(
            body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
        )

    def _status_fault_for(
        self, request: web.Request, fault: Fault, model: str | None
    ) -> web.Response:
        headers = dict(fault.headers)
        retry_after = fault.retry_after
        if retry_after is None and fault.status == 429:
            retry_after = 1  # the real API always sends retry-after on 429
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if fault.body is None:
            return self._error(
                request, fault.status, default_error(fault.status, model)[1], headers
            )
        return web.Response(
            body=orjson.dumps(fault.body),
            status=fault.status,
            content_type="application/json",
            headers=headers,
        )

    # -- handlers --------------------------------------------------------------------

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, rid = request[_CTX].body, request[_CTX].rid
        if body.get("stream"):
            frames = [sse(e, e["type"]) for e in stream_events(body, rid)]
            return await self._send_sse(request, frames[:-1], frames[-1])
        return await self._send_json(request, message_object(body, rid, plan_message(body, rid)))

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        return await self._send_json(request, {"input_tokens": input_tokens(request[_CTX].body)})

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        ids, query = list(self.models), request.query
        if query.get("after_id") in ids:
            ids = ids[ids.index(query["after_id"]) + 1 :]
        if query.get("before_id") in ids:
            ids = ids[: ids.index(query["before_id"])]
        limit = int(query.get("limit", "20"))
        page = ids[-limit:] if "before_id" in query else ids[:limit]
        data = [model_info(m) for m in page]
        first, last = (page[0], page[-1]) if page else (None, None)
        body = {"data": data, "has_more": len(ids) > len(page), "first_id": first, "last_id": last}
        return await self._send_json(request, body)

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["id"]
        if model_id in self.models:
            return await self._send_json(request, model_info(model_id))
        return self._error(request, 404, f"model: {model_id}")

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return self._error(request, 404, f"Not found: {request.method} {request.path}")

    # -- streaming faults ------------------------------------------------------------

    async def _mid_stream_fault(
        self, request: web.Request, resp: web.StreamResponse, fault: Fault, seq: int
    ) -> bool:
        if fault.kind == "malformed_chunk":  # with an event: line, or the SDK would skip it
            await resp.write(MALFORMED_EVENT)
            return False
        return await super()._mid_stream_fault(request, resp, fault, seq)

    def _error_frame(self, fault: Fault, path: str, seq: int) -> bytes:
        return sse(fault.body or error_body("overloaded_error", "Overloaded"), "error")
