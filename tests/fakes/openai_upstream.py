"""A fake OpenAI (and Azure OpenAI classic) upstream for tests.

Speaks the wire format of docs ``protocols.md`` §2.3-2.8 and §1.4, replies deterministically
("echo: <last user text>"), records every request and injects faults on demand, keyed by the
request's ``model``. Runs in a background thread with its own event loop::

    with FakeOpenAI(api_key="sk-fake-123") as fake:
        client = OpenAI(api_key="sk-fake-123", base_url=fake.base_url)
        fake.set_fault("m-stall", Fault("stall_mid_stream", after_chunks=2, delay=5))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import re
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson
from aiohttp import web
from multidict import CIMultiDict

FaultKind = Literal[
    "status", "stall_before_first_byte", "stall_mid_stream", "reset_mid_stream",
    "malformed_chunk", "missing_done", "error_echo_key", "slow_stream", "mid_stream_error",
]  # fmt: skip
Json = dict[str, Any]
CREATED = 1700000000
FINGERPRINT = "fp_fake"
REPLY_MAX_CHARS = 200
EMBED_DIM = 8
DEFAULT_MODELS = ("gpt-4o-mini", "text-embedding-3-small", "deepseek-ai/DeepSeek-V4-Flash")
MALFORMED_FRAME = b"data: {not json\n\n"
DONE_FRAME = b"data: [DONE]\n\n"
_CHAT_USAGE_DETAILS: Json = {
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}  # fmt: skip
_RESPONSE_FIXED: Json = {
    "error": None, "incomplete_details": None, "parallel_tool_calls": True,
    "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
    "text": {"format": {"type": "text"}, "verbosity": "medium"}, "truncation": "disabled",
    "user": None,
}  # fmt: skip
_RESPONSE_ECHOED: Json = {
    "instructions": None, "max_output_tokens": None, "store": True, "temperature": 1.0,
    "tool_choice": "auto", "top_p": 1.0, "metadata": {},
}  # fmt: skip
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found",
          "The model `{model}` does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
          "Limit 3, Used 3, Requested 1. Please try again in 20s. "
          "Visit https://platform.openai.com/account/rate-limits to learn more."),
    500: ("server_error", None,
          "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("service_unavailable_error", "server_is_overloaded",
          "The server is overloaded or not ready yet."),
}  # fmt: skip


@dataclass
class Fault:
    """A fault injected into requests whose ``model`` matches (or any request, for key "*").

    kind: see ``FaultKind``. status/retry_after/headers/body: for ``status`` (body = full JSON
    body; default is a realistic OpenAI error). For ``mid_stream_error`` body = the JSON sent as
    the error frame (default ``{"error": {...server_error...}}``). delay: seconds to stall, or the
    per-chunk delay of ``slow_stream``. after_chunks: K good chunks sent before the fault.
    times: None = permanent, else the fault is removed after this many hits.
    """

    kind: FaultKind
    status: int = 500
    body: Json | None = None
    retry_after: float | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 1.0
    after_chunks: int = 1
    times: int | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {self.kind!r}")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query_string: str
    headers: CIMultiDict[str]
    body: bytes
    json: Any

    @property
    def model(self) -> str | None:
        model = self.json.get("model") if isinstance(self.json, dict) else None
        return model if isinstance(model, str) else None


# ---------------------------------------------------------------------------- helpers


def words(text: str) -> int:
    return len(text.split())


def mask_key(key: str) -> str:
    """OpenAI-style key fragment: first 6 + '***' + last 4 characters."""
    return f"{key[:6]}***{key[-4:]}" if len(key) > 10 else f"{key[:2]}***"


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> Json:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def default_error(status: int, model: str | None = None) -> Json:
    fallback = (
        "server_error" if status >= 500 else "invalid_request_error",
        None,
        f"HTTP {status}",
    )
    type_, code, message = _ERRORS.get(status, fallback)
    return error_body(message.replace("{model}", model or "unknown"), type_, code)


def invalid_key_body(key: str) -> Json:
    message = (
        f"Incorrect API key provided: {mask_key(key)}. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    return error_body(message, "invalid_request_error", "invalid_api_key")


def embedding_vector(key: str, dim: int = EMBED_DIM) -> list[float]:
    """Deterministic unit vector (float32-exact) for an input string or token list key."""
    raw = [
        int.from_bytes(hashlib.sha256(f"{i}:{key}".encode()).digest()[:4], "little") / 2**31 - 1
        for i in range(dim)
    ]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *(v / norm for v in raw))))


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return " ".join(t for t in parts if isinstance(t, str))
    return ""


def reply_for(text: str) -> str:
    return ("echo: " + text)[:REPLY_MAX_CHARS].rstrip()


def pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or [text]


def fragments(text: str, size: int = 8) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def named_first(tools: list[Json], text: str) -> list[Json]:
    """``tools`` with the first one whose name the user's text mentions moved to the front
    (a test steers which tool the fake calls by naming it)."""
    hit = next((t for t in tools if t["name"] and t["name"] in text), None)
    return tools if hit is None else [hit, *(t for t in tools if t is not hit)]


def _pick_tool(tools: Any, choice: Any, text: str = "") -> tuple[str, Json] | None:
    """(name, parameters) of the tool to call; handles chat (nested) and responses (flat)."""
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    funcs = [t.get("function", t) for t in tools if isinstance(t, dict)]
    funcs = named_first(
        [f for f in funcs if isinstance(f, dict) and isinstance(f.get("name"), str)], text
    )
    if isinstance(choice, dict):
        wanted = (choice.get("function") or choice).get("name")
        funcs = [f for f in funcs if f["name"] == wanted] or funcs
    return (funcs[0]["name"], funcs[0].get("parameters") or {}) if funcs else None


def tool_arguments(params: Json, text: str) -> str:
    """JSON arguments from a JSON schema: strings get the last user text."""
    values = {"string": text[:32], "integer": 1, "number": 1.5, "boolean": True}
    props = params.get("properties") or {}
    args = {
        k: values.get(str(v.get("type")) if isinstance(v, dict) else "") for k, v in props.items()
    }
    return orjson.dumps(args).decode()


def _limit(text: str, limit: Any) -> tuple[str, str]:
    parts = pieces(text)
    if isinstance(limit, int) and 0 < limit < len(parts):
        return "".join(parts[:limit]), "length"
    return text, "stop"


def _round_robin(lists: list[list[Any]]) -> Iterator[Any]:
    for row in itertools.zip_longest(*lists):
        yield from (x for x in row if x is not None)


# ---------------------------------------------------------------------------- chat


@dataclass
class _Choice:
    index: int
    text: str | None
    finish: str
    tool: tuple[str, str, str] | None = None  # call_id, name, arguments


def chat_usage(prompt: int, completion: int) -> Json:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return usage | {"total_tokens": prompt + completion} | _CHAT_USAGE_DETAILS


def plan_chat(body: Json, rid: int) -> tuple[list[_Choice], Json]:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    user = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last = user[-1] if user else ""
    tool = _pick_tool(body.get("tools"), body.get("tool_choice"), last)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    choices = []
    for i in range(int(body.get("n") or 1)):
        if tool:
            call = (f"call_fake{rid}_{i}", tool[0], tool_arguments(tool[1], last))
            choices.append(_Choice(i, None, "tool_calls", call))
        else:
            text, finish = _limit(reply_for(last) + (f" ({i})" if i else ""), limit)
            choices.append(_Choice(i, text, finish))
    prompt = sum(words(content_text(m.get("content"))) for m in messages)
    completion = sum(words(c.text or "") + words(c.tool[2] if c.tool else "") for c in choices)
    return choices, chat_usage(prompt, completion)


def chat_object(body: Json, rid: int) -> Json:
    choices, usage = plan_chat(body, rid)
    out = []
    for c in choices:
        msg: Json = {"role": "assistant", "content": c.text, "refusal": None, "annotations": []}
        if c.tool:
            fn = {"name": c.tool[1], "arguments": c.tool[2]}
            msg["tool_calls"] = [{"id": c.tool[0], "type": "function", "function": fn}]
        out.append({"index": c.index, "message": msg, "logprobs": None, "finish_reason": c.finish})
    return {
        "id": f"chatcmpl-fake{rid}",
        "object": "chat.completion",
        "created": CREATED,
        "model": body["model"],
        "choices": out,
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def _choice_deltas(c: _Choice) -> list[tuple[int, Json]]:
    role: Json = {"role": "assistant", "content": "" if c.text is not None else None}
    deltas = [role | {"refusal": None}]
    if c.tool:
        head = {"index": 0, "id": c.tool[0], "type": "function"}
        deltas.append({"tool_calls": [head | {"function": {"name": c.tool[1], "arguments": ""}}]})
        for frag in fragments(c.tool[2]):
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": frag}}]})
    else:
        deltas += [{"content": p} for p in pieces(c.text or "")]
    return [(c.index, d) for d in deltas]


def chat_frames(body: Json, rid: int) -> list[bytes]:
    choices, usage = plan_chat(body, rid)
    base: Json = {"id": f"chatcmpl-fake{rid}", "object": "chat.completion.chunk"}
    base |= {"created": CREATED, "model": body["model"], "system_fingerprint": FINGERPRINT}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if include_usage:
        base["usage"] = None

    def chunk(index: int, delta: Json, finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse(base | {"choices": [choice]})

    frames = [chunk(i, d) for i, d in _round_robin([_choice_deltas(c) for c in choices])]
    frames += [chunk(c.index, {}, c.finish) for c in choices]
    if include_usage:
        frames.append(sse(base | {"choices": [], "usage": usage}))
    return frames


# ---------------------------------------------------------------------------- completions


def _prompts(prompt: Any) -> list[tuple[str, int]]:
    """[(text, token_count)] for str | list[str] | list[int] | list[list[int]]."""
    if isinstance(prompt, str):
        return [(prompt, words(prompt))]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [(" ".join(map(str, prompt)), len(prompt))]
    if isinstance(prompt, list):
        return [p for item in prompt for p in _prompts(item)]
    return [("", 0)]


def plan_completion(body: Json) -> tuple[list[tuple[str, str]], Json]:
    prompts, n = _prompts(body.get("prompt")), int(body.get("n") or 1)
    texts = [_limit(reply_for(p), body.get("max_tokens")) for p, _ in prompts for _ in range(n)]
    prompt_tokens = sum(c for _, c in prompts)
    completion = sum(words(t) for t, _ in texts)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion}
    return texts, usage | {"total_tokens": prompt_tokens + completion}


def completion_object(body: Json, rid: int) -> Json:
    texts, usage = plan_completion(body)
    choices = [
        {"text": t, "index": i, "logprobs": None, "finish_reason": f}
        for i, (t, f) in enumerate(texts)
    ]
    return {
        "id": f"cmpl-fake{rid}",
        "object": "text_completion",
        "created": CREATED,
        "model": body["model"],
        "choices": choices,
        "usage": usage,
    }


def completion_frames(body: Json, rid: int) -> list[bytes]:
    texts, usage = plan_completion(body)
    base: Json = {"id": f"cmpl-fake{rid}", "object": "text_completion", "created": CREATED}
    base["model"] = body["model"]
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if include_usage:
        base["usage"] = None

    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return sse(base | {"choices": [choice]})

    per_choice = [[(i, p) for p in pieces(t)] for i, (t, _) in enumerate(texts)]
    frames = [chunk(i, p) for i, p in _round_robin(per_choice)]
    frames += [chunk(i, "", f) for i, (_, f) in enumerate(texts)]
    if include_usage:
        frames.append(sse(base | {"choices": [], "usage": usage}))
    return frames


# ---------------------------------------------------------------------------- embeddings


def embeddings_object(body: Json) -> Json:
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        raw = [raw]
    items = raw if isinstance(raw, list) else []
    dim = int(body.get("dimensions") or EMBED_DIM)
    data, tokens = [], 0
    for i, item in enumerate(items):
        key = item if isinstance(item, str) else "tokens:" + ",".join(map(str, item))
        tokens += words(item) if isinstance(item, str) else len(item)
        vec: Any = embedding_vector(key, dim)
        if body.get("encoding_format") == "base64":
            vec = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vec})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": body["model"], "usage": usage}


# ---------------------------------------------------------------------------- responses


def _input_texts(body: Json) -> tuple[list[str], str]:
    """(all input texts, last user text)."""
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw or []
    texts, last = [], ""
    for item in (i for i in items if isinstance(i, dict)):
        text = content_text(item.get("content")) or str(item.get("output") or "")
        texts.append(text)
        if item.get("role") == "user":
            last = text
    return [*texts, body.get("instructions") or ""], last


def responses_output(body: Json, rid: int) -> tuple[list[Json], Json]:
    texts, last = _input_texts(body)
    reply = reply_for(last)
    part = {"type": "output_text", "text": reply, "annotations": [], "logprobs": []}
    msg = {"type": "message", "id": f"msg_fake{rid}", "status": "completed", "role": "assistant"}
    output: list[Json] = [msg | {"content": [part]}]
    tool = _pick_tool(body.get("tools"), body.get("tool_choice"), last)
    if tool:
        args = tool_arguments(tool[1], last)
        output.append(
            {"type": "function_call", "id": f"fc_fake{rid}", "call_id": f"call_fake{rid}_0"}
            | {"name": tool[0], "arguments": args, "status": "completed"}
        )
    prompt = sum(words(t) for t in texts)
    completion = words(reply) + sum(words(o.get("arguments", "")) for o in output)
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    return output, usage


def response_object(body: Json, rid: int, status: str, output: list[Json], usage: Any) -> Json:
    echoed = {k: body.get(k, v) for k, v in _RESPONSE_ECHOED.items()}
    fixed = {"id": f"resp_fake{rid}", "object": "response", "created_at": CREATED}
    fixed |= {"status": status, "model": body["model"], "output": output, "usage": usage}
    return fixed | _RESPONSE_FIXED | echoed | {"tools": body.get("tools") or []}


def _item_events(index: int, item: Json) -> list[Json]:
    where = {"item_id": item["id"], "output_index": index}
    if item["type"] == "function_call":
        added = item | {"arguments": "", "status": "in_progress"}
        deltas = [{"delta": f} for f in fragments(item["arguments"])]
        events = [{"type": "response.function_call_arguments.delta"} | where | d for d in deltas]
        done = {"arguments": item["arguments"], "name": item["name"]}
        events.append({"type": "response.function_call_arguments.done"} | where | done)
    else:
        added = item | {"status": "in_progress", "content": []}
        part = item["content"][0]
        where |= {"content_index": 0}
        empty = part | {"text": ""}
        events = [{"type": "response.content_part.added"} | where | {"part": empty}]
        for p in pieces(part["text"]):
            events.append(
                {"type": "response.output_text.delta"} | where | {"delta": p, "logprobs": []}
            )
        text_done = {"text": part["text"], "logprobs": []}
        events.append({"type": "response.output_text.done"} | where | text_done)
        events.append({"type": "response.content_part.done"} | where | {"part": part})
    head = {"type": "response.output_item.added", "output_index": index, "item": added}
    tail = {"type": "response.output_item.done", "output_index": index, "item": item}
    return [head, *events, tail]


def responses_events(body: Json, rid: int) -> list[Json]:
    """Full event list; the terminal ``response.completed`` event is last."""
    output, usage = responses_output(body, rid)
    pending = response_object(body, rid, "in_progress", [], None)
    events: list[Json] = [
        {"type": "response.created", "response": pending},
        {"type": "response.in_progress", "response": pending},
    ]
    for index, item in enumerate(output):
        events += _item_events(index, item)
    final = response_object(body, rid, "completed", output, usage)
    events.append({"type": "response.completed", "response": final})
    return [e | {"sequence_number": n} for n, e in enumerate(events)]


# ---------------------------------------------------------------------------- server

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Ctx:
    """Per-request state shared by the middleware and the handlers."""

    body: Any
    rid: int
    fault: Fault | None = None
    resp: web.StreamResponse | None = None
    aborted: bool = False


_CTX = web.RequestKey("fake_openai_ctx", _Ctx)


class FakeOpenAI:
    """Fake OpenAI upstream. ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self,
        api_key: str = "sk-fake-0123456789abcdef",
        *,
        azure_api_key: str | None = None,
        models: list[str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.azure_api_key = azure_api_key or api_key
        self.models = list(models or DEFAULT_MODELS)
        self.requests: list[RecordedRequest] = []
        self.active = 0
        self.cancelled = 0
        self.port = 0
        self._faults: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- test-thread API ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def set_fault(self, model: str, fault: Fault) -> None:
        """Inject ``fault`` into requests for ``model`` ("*" matches every request)."""
        with self._lock:
            self._faults[model] = fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Clear faults, recorded requests and the cancelled counter."""
        self.clear_faults()
        with self._lock:
            self.requests.clear()
            self.cancelled = 0

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            return self.requests[-1]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` (e.g. ``lambda: fake.cancelled >= 1``) until true or timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, errors), name="fake-openai", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            with contextlib.suppress(Exception):
                fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- loop thread -----------------------------------------------------------------

    def _serve(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._setup())
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    async def _setup(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 2**20)
        post = [
            ("/v1/chat/completions", self._chat),
            ("/v1/completions", self._completions),
            ("/v1/embeddings", self._embeddings),
            ("/v1/responses", self._responses),
            ("/openai/deployments/{deployment}/chat/completions", self._chat),
            ("/openai/deployments/{deployment}/embeddings", self._embeddings),
        ]
        for path, handler in post:
            app.router.add_post(path, handler)
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

    def _take_fault(self, model: str | None) -> Fault | None:
        with self._lock:
            key = model if model in self._faults else "*"
            fault = self._faults.get(key)
            if fault is None:
                return None
            fault.hits += 1
            if fault.times is not None and fault.hits >= fault.times:
                del self._faults[key]
            return fault

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        parsed: Any = None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(raw) if raw else None
        rec = RecordedRequest(
            request.method, request.path, request.query_string, CIMultiDict(request.headers),
            raw, parsed,
        )  # fmt: skip
        with self._lock:
            self.requests.append(rec)
        ctx = request[_CTX] = _Ctx(parsed, next(self._ids))
        self.active += 1
        try:
            return await self._guarded(request, handler, ctx)
        except asyncio.CancelledError:  # handler_cancellation: the peer went away
            self.cancelled += not ctx.aborted
            raise
        except ConnectionError:  # the peer went away while we were writing
            self.cancelled += 1
            return ctx.resp or web.Response(status=499)
        finally:
            self.active -= 1

    async def _guarded(
        self, request: web.Request, handler: Handler, ctx: _Ctx
    ) -> web.StreamResponse:
        if (denied := self._check_auth(request)) is not None:
            return denied
        body = ctx.body
        if request.method == "POST":
            if not isinstance(body, dict):
                msg = "We could not parse the JSON body of your request."
                return _json(error_body(msg, "invalid_request_error"), 400)
            if "deployment" in request.match_info:
                body = ctx.body = {"model": request.match_info["deployment"]} | body
            if not isinstance(body.get("model"), str):
                msg = "you must provide a model parameter"
                return _json(error_body(msg, "invalid_request_error"), 400)
        model = body.get("model") if isinstance(body, dict) else None
        fault = ctx.fault = self._take_fault(model)
        if fault and fault.kind == "stall_before_first_byte":
            await asyncio.sleep(fault.delay)
        if fault and fault.kind == "status":
            return self._status_fault(fault, model)
        if fault and fault.kind == "error_echo_key":
            return _json(invalid_key_body(self._presented_key(request) or ""), 401)
        return await handler(request)

    def _presented_key(self, request: web.Request) -> str | None:
        if request.path.startswith("/openai/deployments/"):
            return request.headers.get("api-key")
        auth = request.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None

    def _check_auth(self, request: web.Request) -> web.Response | None:
        key = self._presented_key(request)
        if request.path.startswith("/openai/deployments/"):
            if "api-version" not in request.query:
                msg = "Missing required query parameter: api-version"
                return _json(error_body(msg, "invalid_request_error", param="api-version"), 400)
            if key != self.azure_api_key:
                msg = (
                    "Access denied due to invalid subscription key or wrong API endpoint. Make sure"
                    " to provide a valid key for an active subscription and use a correct regional"
                    " API endpoint for your resource."
                )
                return _json(error_body(msg, "invalid_request_error", "401"), 401)
            return None
        if not key:
            msg = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username and password. You can obtain "
                "an API key from https://platform.openai.com/account/api-keys."
            )
            return _json(error_body(msg, "invalid_request_error"), 401)
        return None if key == self.api_key else _json(invalid_key_body(key), 401)

    def _status_fault(self, fault: Fault, model: str | None) -> web.Response:
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        body = fault.body if fault.body is not None else default_error(fault.status, model)
        return _json(body, fault.status, headers)

    # -- handlers --------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, rid = request[_CTX].body, request[_CTX].rid
        if body.get("stream"):
            return await self._send_sse(request, chat_frames(body, rid), DONE_FRAME)
        return await self._send_json(request, chat_object(body, rid))

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body, rid = request[_CTX].body, request[_CTX].rid
        if body.get("stream"):
            return await self._send_sse(request, completion_frames(body, rid), DONE_FRAME)
        return await self._send_json(request, completion_object(body, rid))

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._send_json(request, embeddings_object(request[_CTX].body))

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body, rid = request[_CTX].body, request[_CTX].rid
        if not body.get("stream"):
            output, usage = responses_output(body, rid)
            return await self._send_json(
                request, response_object(body, rid, "completed", output, usage)
            )
        events = responses_events(body, rid)
        frames = [sse(e, e["type"]) for e in events]
        return await self._send_sse(request, frames[:-1], frames[-1], len(events) - 1)

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        return _json({"object": "list", "data": [_model(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["id"]
        if model_id in self.models:
            return _json(_model(model_id))
        return _json(default_error(404, model_id), 404)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        msg = f"Invalid URL ({request.method} {request.path})"
        return _json(error_body(msg, "invalid_request_error"), 404)

    # -- sending with faults ---------------------------------------------------------

    async def _abort(self, request: web.Request) -> None:
        request[_CTX].aborted = True
        if request.transport is not None:
            request.transport.abort()
        await asyncio.sleep(1)  # handler_cancellation cancels us once connection_lost runs

    async def _send_json(self, request: web.Request, obj: Json) -> web.StreamResponse:
        fault = request[_CTX].fault
        data = orjson.dumps(obj)
        kind = fault.kind if fault else None
        if kind == "malformed_chunk":
            data = b"{not json"
        if kind not in ("stall_mid_stream", "reset_mid_stream"):
            return web.Response(body=data, content_type="application/json", headers=_headers())
        resp = web.StreamResponse(headers=_headers() | {"Content-Type": "application/json"})
        resp.content_length = len(data)
        request[_CTX].resp = resp
        await resp.prepare(request)
        await resp.write(data[: len(data) // 2])
        if kind == "reset_mid_stream":
            await self._abort(request)
            return resp
        await asyncio.sleep(fault.delay if fault else 0)
        await resp.write(data[len(data) // 2 :])
        return resp

    async def _send_sse(
        self, request: web.Request, frames: list[bytes], done: bytes, seq: int = 0
    ) -> web.StreamResponse:
        """Send frames then ``done``; ``seq`` = sequence_number for a Responses error event."""
        fault = request[_CTX].fault
        headers = _headers() | {"Content-Type": "text/event-stream; charset=utf-8"}
        resp = web.StreamResponse(headers=headers)
        request[_CTX].resp = resp
        await resp.prepare(request)
        kind = fault.kind if fault else None
        cut = min(fault.after_chunks, len(frames)) if fault else -1
        for i, frame in enumerate([*frames, b""]):
            if fault and i == cut:
                if await self._mid_stream_fault(request, resp, fault, seq):
                    return resp
            if not frame:
                break
            if fault and kind == "slow_stream":
                await asyncio.sleep(fault.delay)
            await resp.write(frame)
        if kind != "missing_done":
            await resp.write(done)
        else:
            resp.force_close()
        await resp.write_eof()
        return resp

    async def _mid_stream_fault(
        self, request: web.Request, resp: web.StreamResponse, fault: Fault, seq: int
    ) -> bool:
        """Apply a mid-stream fault; True when the stream must end here."""
        if fault.kind == "stall_mid_stream":
            await asyncio.sleep(fault.delay)
        elif fault.kind == "malformed_chunk":
            await resp.write(MALFORMED_FRAME)
        elif fault.kind == "reset_mid_stream":
            await self._abort(request)
            return True
        elif fault.kind == "mid_stream_error":
            await resp.write(self._error_frame(fault, request.path, seq))
            resp.force_close()
            await resp.write_eof()
            return True
        return False

    def _error_frame(self, fault: Fault, path: str, seq: int) -> bytes:
        body = fault.body or default_error(500)
        if path.endswith("/responses"):
            err = body.get("error", body)
            event = {"type": "error", "code": err.get("code"), "message": err.get("message")}
            return sse(event | {"param": None, "sequence_number": seq}, "error")
        return sse(body)


def _headers() -> dict[str, str]:
    return {
        "x-request-id": "req_fake" + uuid.uuid4().hex[:16],
        "openai-version": "2020-10-01",
        "openai-processing-ms": "1",
        "openai-organization": "org-fake",
    }


def _json(obj: Json, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj),
        status=status,
        content_type="application/json",
        headers=_headers() | (headers or {}),
    )


def _model(model_id: str) -> Json:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "system"}
