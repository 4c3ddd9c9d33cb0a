"""A fake Gemini API (Generative Language API / AI Studio) upstream for tests.

Speaks the wire format of docs ``protocols.md`` §4 on ``/v1beta/...``, ``/v1/...`` (and
``/v1alpha/...``), accepts camelCase and snake_case request fields, replies deterministically
("echo: <last user text>"), records every request and injects faults on demand, keyed by the model
in the request path. Mirrors ``openai_upstream.FakeOpenAI`` (same ``Fault`` / ``RecordedRequest``)::

    with FakeGemini(api_key="AIza-fake-123") as fake:
        client = genai.Client(api_key="AIza-fake-123",
                              http_options=types.HttpOptions(base_url=fake.url))
        fake.set_fault("gemini-2.5-flash", Fault("status", status=429))
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from multidict import CIMultiDict

from .openai_upstream import (
    _CTX,
    EMBED_DIM,
    Fault,
    Handler,
    RecordedRequest,
    _Ctx,
    embedding_vector,
    mask_key,
    named_first,
    pieces,
    reply_for,
    tool_arguments,
    words,
)

__all__ = ["DEFAULT_MODELS", "SKIP_SIGNATURE", "FakeGemini", "Fault", "GeminiRecordedRequest"]

Json = dict[str, Any]
SKIP_SIGNATURE = "skip_thought_signature_validator"
THOUGHT_PREFIX = "thinking about: "
SIGNATURE_PREFIX = b"fake-thought-signature:"
DEFAULT_MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-embedding-001")  # fmt: skip
_VERSION = "{ver:v1beta|v1alpha|v1}"
_PATH_MODEL = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+)")
_STATUS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
          "access token, login cookie or other valid authentication credential."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "models/{model} is not found for API version {ver}, or is not supported "
          "for generateContent. Call ListModels to see the list of available models and their "
          "supported methods."),
    429: ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and "
          "billing details. For more information on this error, head to: "
          "https://ai.google.dev/gemini-api/docs/rate-limits."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
          "https://developers.generativeai.google/guide/troubleshooting"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}  # fmt: skip
TOOL_MIX = "Tool use with function calling is unsupported"
SEARCH_RESULT_URL = "https://example.com/fake-search-result"
_NO_KEY = ("Method doesn't allow unregistered callers (callers without established identity). "
           "Please use API Key or other form of API consumer identity to call this API.")  # fmt: skip
_NO_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for "
    "tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:{name}` , position {position}. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)
_PART_FIELDS = {
    "text", "thought", "thoughtSignature", "inlineData", "fileData", "functionCall",
    "functionResponse", "executableCode", "codeExecutionResult", "videoMetadata", "partMetadata",
    "mediaResolution", "toolCall", "toolResponse",
}  # fmt: skip


class GeminiRecordedRequest(RecordedRequest):
    """A ``RecordedRequest`` whose ``model`` comes from the path (``/v1beta/models/{model}:…``)."""

    @property
    def model(self) -> str | None:
        match = _PATH_MODEL.match(self.path)
        return match.group(1) if match else None

    @property
    def api_key(self) -> str | None:
        return (
            self.headers.get("x-goog-api-key") or parse_qs(self.query_string).get("key", [None])[0]
        )


# ---------------------------------------------------------------------------- helpers


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


_PART_FIELDS |= {_snake(f) for f in _PART_FIELDS}


def get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for a camelCase ``name``, falling back to its snake_case spelling."""
    if not isinstance(obj, dict):
        return default
    value = obj.get(name)
    return obj.get(_snake(name), default) if value is None else value


def gemini_error(code: int, message: str | None = None, details: list[Json] | None = None) -> Json:
    status, default = _STATUS.get(code, ("INTERNAL" if code >= 500 else "INVALID_ARGUMENT", ""))
    err: Json = {"code": code, "message": message or default or f"HTTP {code}", "status": status}
    return {"error": err | ({"details": details} if details else {})}


def default_error(
    code: int, model: str | None = None, ver: str = "v1beta", retry_after: float | str | None = None
) -> Json:
    """Realistic error body; a 429 carries QuotaFailure and RetryInfo(retry_after or 20 s)."""
    body = gemini_error(code)
    body["error"]["message"] = body["error"]["message"].format(model=model or "unknown", ver=ver)
    if code == 429:
        body["error"]["details"] = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                 "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                 "quotaDimensions": {"location": "global", "model": model or "unknown"},
                 "quotaValue": "10"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after or 20}s"},
        ]  # fmt: skip
    return body


def invalid_key_body(message: str = "API key not valid. Please pass a valid API key.") -> Json:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
            "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}  # fmt: skip
    localized = {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US"}
    return gemini_error(400, message, [info, localized | {"message": message}])


def parts_of(content: Any) -> list[Json]:
    parts = get(content, "parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def parts_text(parts: list[Json], thoughts: bool = False) -> str:
    texts = (p.get("text") for p in parts if bool(p.get("thought")) == thoughts)
    return " ".join(t for t in texts if isinstance(t, str))


def contents_of(body: Json) -> list[Json]:
    contents = get(body, "contents")
    return [c for c in contents if isinstance(c, dict)] if isinstance(contents, list) else []


def prompt_tokens(body: Json) -> int:
    texts = [parts_text(parts_of(get(body, "systemInstruction")))]
    texts += [parts_text(parts_of(c)) for c in contents_of(body)]
    return sum(words(t) for t in texts)


def function_args(schema: Any, text: str) -> Json:
    """Args from a JSON / OpenAPI schema (any type casing): strings get the last user text."""
    props = get(schema, "properties") or {}
    flat = {k: {"type": str(get(v, "type") or "").lower()} for k, v in props.items()}
    args: Json = orjson.loads(tool_arguments({"properties": flat}, text))
    return args


def pick_function(body: Json, text: str = "") -> tuple[str, Json] | None:
    """(name, schema) of the declared function to call, unless calling mode is NONE: the one
    the user's text names, else the first."""
    config = get(get(body, "toolConfig"), "functionCallingConfig") or {}
    if str(get(config, "mode") or "AUTO").upper() == "NONE":
        return None
    decls = [
        d
        for tool in get(body, "tools") or []
        for d in get(tool, "functionDeclarations") or []
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    ]
    allowed = get(config, "allowedFunctionNames") or []
    decls = named_first([d for d in decls if d["name"] in allowed] or decls, text)
    if not decls:
        return None
    schema = get(decls[0], "parametersJsonSchema") or get(decls[0], "parameters") or {}
    return decls[0]["name"], schema


def validate(body: Json, require_signatures: bool) -> str | None:
    """An INVALID_ARGUMENT message for a bad generateContent body, else None."""
    contents = contents_of(body)
    if not contents:
        return "* GenerateContentRequest.contents: contents is not specified\n"
    tools = [t for t in get(body, "tools") or [] if isinstance(t, dict)]
    if has_search(body) and any(get(t, "functionDeclarations") for t in tools):
        return TOOL_MIX  # Gemini 2.x: search grounding and function calling exclude each other
    for i, content in enumerate(contents):
        for j, part in enumerate(parts_of(content)):
            for key in part:
                if key not in _PART_FIELDS:
                    where = f"contents[{i}].parts[{j}]"
                    return f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': Cannot find field.'  # fmt: skip
    if not require_signatures:
        return None
    # Like Gemini 3: in the current turn (after the last user text), the first functionCall part
    # of each model turn must carry its thoughtSignature.
    start = max((i for i, c in enumerate(contents) if _is_user_text(c)), default=-1)
    for i, content in enumerate(contents[start + 1 :], start + 1):
        calls = [p for p in parts_of(content) if get(p, "functionCall")]
        if get(content, "role") == "model" and calls and not get(calls[0], "thoughtSignature"):
            name = get(get(calls[0], "functionCall"), "name")
            return _NO_SIGNATURE.format(name=name, position=i + 1)
    return None


def _is_user_text(content: Json) -> bool:
    return get(content, "role", "user") == "user" and bool(parts_text(parts_of(content)))


# ---------------------------------------------------------------------------- generateContent


@dataclass
class _Candidate:
    index: int
    parts: list[Json]
    finish: str
    grounding: Json | None = None


def _limit(text: str, stops: Any, limit: Any) -> tuple[str, str]:
    for stop in stops if isinstance(stops, list) else []:
        if isinstance(stop, str) and stop and stop in text:
            text = text[: text.index(stop)]
    parts = pieces(text)
    if isinstance(limit, int) and 0 < limit < len(parts):
        return "".join(parts[:limit]), "MAX_TOKENS"
    return text, "STOP"


def plan(body: Json, rid: int) -> list[_Candidate]:
    contents = contents_of(body)
    user = [parts_text(parts_of(c)) for c in contents if _is_user_text(c)]
    last = user[-1] if user else ""
    tool_result = bool(contents) and any(get(p, "functionResponse") for p in parts_of(contents[-1]))
    tool = None if tool_result or searching(body, last) else pick_function(body, last)
    config = get(body, "generationConfig") or {}
    thinking = bool(get(get(config, "thinkingConfig"), "includeThoughts"))
    stops, limit = get(config, "stopSequences"), get(config, "maxOutputTokens")
    candidates = []
    for i in range(int(get(config, "candidateCount") or 1)):
        parts: list[Json] = [{"text": THOUGHT_PREFIX + last, "thought": True}] if thinking else []
        finish = "STOP"
        if tool:
            call = {"name": tool[0], "args": function_args(tool[1], last)}
            sig = base64.b64encode(SIGNATURE_PREFIX + f"{rid}:{i}".encode()).decode()
            parts.append({"functionCall": call, "thoughtSignature": sig})
        else:
            text, finish = _limit(reply_for(last) + (f" ({i})" if i else ""), stops, limit)
            parts += [{"text": text}] if text else []
        candidates.append(
            _Candidate(i, parts, finish, grounding(last) if searching(body, last) else None)
        )
    return candidates


def has_search(body: Json) -> bool:
    return any(isinstance(t, dict) and "googleSearch" in t for t in get(body, "tools") or [])


def searching(body: Json, last: str) -> bool:
    """Whether the fake grounds this answer in a (pretend) Google search."""
    return "search" in last and has_search(body)


def grounding(query: str) -> Json:
    """The candidate's ``groundingMetadata`` of a searched answer (a trimmed real one)."""
    chunk = {"web": {"uri": SEARCH_RESULT_URL, "title": "example.com"}}
    support = {"segment": {"startIndex": 0, "endIndex": 4, "text": "echo"}}
    return {
        "webSearchQueries": [query],
        "groundingChunks": [chunk],
        "groundingSupports": [support | {"groundingChunkIndices": [0]}],
        "searchEntryPoint": {"renderedContent": "<div>fake</div>"},
    }


def usage_metadata(prompt: int, parts: list[Json]) -> Json:
    thoughts = words(parts_text(parts, thoughts=True))
    calls = (orjson.dumps(p["functionCall"]["args"]).decode() for p in parts if "functionCall" in p)
    output = words(parts_text(parts)) + sum(words(c) for c in calls)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": output}
    usage["totalTokenCount"] = prompt + output + thoughts
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage | ({"thoughtsTokenCount": thoughts} if thoughts else {})


def _candidate(
    index: int, parts: list[Json], finish: str | None, grounding: Json | None = None
) -> Json:
    content = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    out = {"content": content} | ({"finishReason": finish} if finish else {})
    return out | ({"groundingMetadata": grounding} if grounding else {}) | {"index": index}


def _envelope(candidates: list[Json], usage: Json, model: str, rid: int) -> Json:
    out = {"candidates": candidates, "usageMetadata": usage, "modelVersion": model}
    return out | {"responseId": f"fakeResp{rid}"}


def generate_response(body: Json, model: str, rid: int) -> Json:
    planned = plan(body, rid)
    candidates = [_candidate(c.index, c.parts, c.finish, c.grounding) for c in planned]
    usage = usage_metadata(prompt_tokens(body), [p for c in planned for p in c.parts])
    return _envelope(candidates, usage, model, rid)


def stream_chunks(body: Json, model: str, rid: int) -> list[Json]:
    """Partial GenerateContentResponses: text split by word, thought / functionCall whole."""
    steps: list[tuple[int, Json | None, str | None]] = []
    grounded = {}
    for c in plan(body, rid):
        grounded[c.index] = c.grounding
        items: list[Json | None] = []
        for p in c.parts:
            plain = "text" in p and not p.get("thought")
            items += [{"text": piece} for piece in pieces(p["text"])] if plain else [p]
        items = items or [None]
        steps += [
            (c.index, p, c.finish if n == len(items) - 1 else None) for n, p in enumerate(items)
        ]
    prompt, sent, chunks = prompt_tokens(body), [], []
    for index, part, finish in steps:
        sent += [part] if part else []
        cand = _candidate(
            index, [part] if part else [], finish, grounded[index] if finish else None
        )
        chunks.append(_envelope([cand], usage_metadata(prompt, sent), model, rid))
    return chunks


def count_tokens_response(body: Json) -> Json:
    inner = get(body, "generateContentRequest")
    total = prompt_tokens(inner if isinstance(inner, dict) else body)
    return {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}  # fmt: skip


def embed_values(req: Json) -> list[float]:
    dim = int(get(req, "outputDimensionality") or EMBED_DIM)
    return embedding_vector(parts_text(parts_of(get(req, "content"))), dim)


def model_info(name: str) -> Json:
    embed = "embedding" in name
    display = " ".join(w if w[0].isdigit() else w.capitalize() for w in name.split("-"))
    info: Json = {"name": f"models/{name}", "version": "001", "displayName": display}
    info["description"] = f"Fake {display}"
    info |= {"inputTokenLimit": 2048, "outputTokenLimit": 1} if embed else {}
    info |= {} if embed else {"inputTokenLimit": 1048576, "outputTokenLimit": 65536}
    methods = ["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]
    if not embed:
        methods = ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
        info |= {"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": True}
    return info | {"supportedGenerationMethods": methods}


# ---------------------------------------------------------------------------- server


class FakeGemini:
    """Fake Gemini upstream. ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self,
        api_key: str = "AIza-fake-0123456789abcdef",
        *,
        models: list[str] | None = None,
        require_thought_signatures: bool = False,
    ) -> None:
        self.api_key = api_key
        self.models = list(models or DEFAULT_MODELS)
        self.require_thought_signatures = require_thought_signatures
        self.requests: list[GeminiRecordedRequest] = []
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
        """Base URL without version, as ``HttpOptions(base_url=...)`` wants it."""
        return f"http://127.0.0.1:{self.port}"

    base_url = url

    def set_fault(self, model: str, fault: Fault) -> None:
        """Inject ``fault`` into requests for path model ``model`` ("*" matches every request)."""
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

    def requests_for(self, path: str) -> list[GeminiRecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def last_request(self) -> GeminiRecordedRequest:
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

    def start(self) -> FakeGemini:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._setup(), self._loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- loop thread -----------------------------------------------------------------

    async def _setup(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 2**20)
        app.router.add_post(f"/{_VERSION}/models/{{call}}", self._dispatch)
        app.router.add_get(f"/{_VERSION}/models", self._list_models)
        app.router.add_get(f"/{_VERSION}/models/{{name}}", self._get_model)
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
        rec = GeminiRecordedRequest(
            request.method, request.path, request.query_string, CIMultiDict(request.headers),
            raw, parsed,
        )  # fmt: skip
        with self._lock:
            self.requests.append(rec)
        ctx = request[_CTX] = _Ctx(parsed if raw else {}, next(self._ids))
        self.active += 1
        try:
            return await self._guarded(request, handler, ctx, rec)
        except asyncio.CancelledError:  # handler_cancellation: the peer went away
            self.cancelled += not ctx.aborted
            raise
        except ConnectionError:  # the peer went away while we were writing
            self.cancelled += 1
            return ctx.resp or web.Response(status=499)
        finally:
            self.active -= 1

    async def _guarded(
        self, request: web.Request, handler: Handler, ctx: _Ctx, rec: GeminiRecordedRequest
    ) -> web.StreamResponse:
        key = rec.api_key
        if not key:
            return _json(gemini_error(403, _NO_KEY), 403)
        if key != self.api_key:
            return _json(invalid_key_body(), 400)
        if request.method == "POST" and not isinstance(ctx.body, dict):
            return _json(gemini_error(400, "Invalid JSON payload received. Unexpected token."), 400)
        fault = ctx.fault = self._take_fault(rec.model)
        if fault and fault.kind == "stall_before_first_byte":
            await asyncio.sleep(fault.delay)
        if fault and fault.kind == "status":
            ver = request.path.split("/")[1]
            body = fault.body or default_error(fault.status, rec.model, ver, fault.retry_after)
            return _json(body, fault.status, fault.headers)
        if fault and fault.kind == "error_echo_key":
            return _json(invalid_key_body(f"API key not valid: {mask_key(key)}."), 400)
        return await handler(request)

    # -- handlers --------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        ctx = request[_CTX]
        body, rid = ctx.body, ctx.rid
        if method in ("generateContent", "streamGenerateContent"):
            if msg := validate(body, self.require_thought_signatures):
                return _json(gemini_error(400, msg), 400)
            if method == "generateContent":
                return await self._send_json(request, generate_response(body, model, rid))
            sse_mode = request.query.get("alt") == "sse"
            return await self._send_stream(request, stream_chunks(body, model, rid), sse_mode)
        if method == "countTokens":
            return await self._send_json(request, count_tokens_response(body))
        if method == "embedContent":
            return await self._send_json(request, {"embedding": {"values": embed_values(body)}})
        if method == "batchEmbedContents":
            reqs = get(body, "requests")
            if not isinstance(reqs, list) or not reqs:
                msg = "* BatchEmbedContentsRequest.requests: requests is not specified\n"
                return _json(gemini_error(400, msg), 400)
            embeddings = [{"values": embed_values(r)} for r in reqs]
            return await self._send_json(request, {"embeddings": embeddings})
        return await self._not_found(request)

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("pageSize") or 50)
        start = int(request.query.get("pageToken") or 0)
        page: Json = {"models": [model_info(m) for m in self.models[start : start + size]]}
        if start + size < len(self.models):
            page["nextPageToken"] = str(start + size)
        return _json(page)

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name in self.models:
            return _json(model_info(name))
        return _json(default_error(404, name, request.match_info["ver"]), 404)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        msg = f"Method not found: {request.method} {request.path}"
        return _json(gemini_error(404, msg), 404)

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
            return _json(data)
        resp = web.StreamResponse(headers=_HEADERS | {"Content-Type": _JSON_TYPE})
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

    async def _send_stream(
        self, request: web.Request, chunks: list[Json], sse_mode: bool
    ) -> web.StreamResponse:
        """SSE (``alt=sse``, no terminator) or an incrementally written JSON array."""
        fault = request[_CTX].fault
        ctype = "text/event-stream" if sse_mode else _JSON_TYPE
        resp = web.StreamResponse(headers=_HEADERS | {"Content-Type": ctype})
        resp.headers["Content-Disposition"] = "attachment"
        request[_CTX].resp = resp
        await resp.prepare(request)

        def frame(i: int, data: bytes) -> bytes:
            return b"data: " + data + b"\r\n\r\n" if sse_mode else (b",\r\n", b"[")[i == 0] + data

        kind = fault.kind if fault else None
        cut = min(fault.after_chunks, len(chunks)) if fault else -1
        for i, chunk in enumerate([*chunks, None]):
            if fault and i == cut:
                if kind == "stall_mid_stream":
                    await asyncio.sleep(fault.delay)
                elif kind == "malformed_chunk":
                    await resp.write(frame(i, b"{not json"))
                elif kind == "reset_mid_stream":
                    await self._abort(request)
                    return resp
                elif kind == "mid_stream_error":
                    error = orjson.dumps(fault.body or default_error(500))
                    await resp.write(frame(i, error) + (b"" if sse_mode else b"]"))
                    resp.force_close()
                    await resp.write_eof()
                    return resp
            if chunk is None:
                break
            if kind == "slow_stream":
                await asyncio.sleep(fault.delay if fault else 0)
            await resp.write(frame(i, orjson.dumps(chunk)))
        if not sse_mode and kind != "missing_done":
            await resp.write(b"]")
        await resp.write_eof()
        return resp


_JSON_TYPE = "application/json; charset=UTF-8"


_HEADERS = {"Server": "scaffolding on HTTPServer2", "Vary": "Origin, X-Origin, Referer",
            "X-Content-Type-Options": "nosniff", "Server-Timing": "gfet4t7; dur=1"}  # fmt: skip


def _json(
    obj: Json | bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    headers = _HEADERS | {"Content-Type": _JSON_TYPE} | (headers or {})
    return web.Response(body=body, status=status, headers=headers)
