"""Pieces both directions share: finish reasons, usage, ids, data URLs, reasoning fields."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from typing import Any, NotRequired, TypedDict

import orjson

from ...canonical import FinishReason, StreamError, ToolCall, Usage

__all__ = [
    "CHAT_ID_PREFIX",
    "WireToolCall",
    "WireUsage",
    "arguments_text",
    "chat_id",
    "data_url",
    "finish_in",
    "json_text",
    "now",
    "parse_data_url",
    "reasoning_text",
    "signature_of",
    "stream_error",
    "tool_call_out",
    "usage_in",
    "usage_out",
]

CHAT_ID_PREFIX = "chatcmpl-"

# Upstream finish reasons → canonical. Unknown values count as "stop".
_FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",  # some vLLM / TGI builds
    "end_turn": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",  # deprecated functions API
    "content_filter": "content_filter",
    "sensitive": "content_filter",  # GLM
    "error": "error",  # OpenRouter
    "network_error": "error",  # GLM
    "insufficient_system_resource": "error",  # DeepSeek
}

# OpenAI-style error types and codes → the HTTP status they stand for (mid-stream errors).
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "tokens": 429,
    "requests": 429,
    "overloaded_error": 503,
    "service_unavailable_error": 503,
    "server_is_overloaded": 503,
    "timeout_error": 504,
}


class _PromptDetails(TypedDict, total=False):
    cached_tokens: int
    cache_write_tokens: int


class _CompletionDetails(TypedDict):
    reasoning_tokens: int


class WireUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails
    completion_tokens_details: _CompletionDetails


class _Function(TypedDict):
    name: str
    arguments: str


class _Google(TypedDict):
    thought_signature: str


class _Extra(TypedDict):
    google: _Google


class WireToolCall(TypedDict):
    id: str
    type: str
    function: _Function
    extra_content: NotRequired[_Extra]


def tool_call_out(call: ToolCall, arguments: str | None = None) -> WireToolCall:
    """A tool call as OpenAI writes it. A Gemini thought signature rides in
    ``extra_content.google.thought_signature``, as Gemini's OpenAI-compatible API does."""
    out: WireToolCall = {
        "id": call.id,
        "type": "function",
        "function": {
            "name": call.name,
            "arguments": call.arguments if arguments is None else arguments,
        },
    }
    if call.signature is not None:
        out["extra_content"] = {"google": {"thought_signature": call.signature}}
    return out


def signature_of(call: dict[str, Any]) -> str | None:
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else None


def arguments_text(value: object) -> str:
    """Tool-call arguments as JSON text: GLM sends an object where OpenAI sends a string."""
    if isinstance(value, str):
        return value
    return "{}" if value is None else json_text(value)


def now() -> int:
    return int(time.time())


def chat_id(upstream_id: str | None) -> str:
    """A ``chatcmpl-`` id: the given one, prefixed if it lacks the prefix, or a new one."""
    if not upstream_id:
        return CHAT_ID_PREFIX + secrets.token_hex(12)
    if upstream_id.startswith(CHAT_ID_PREFIX):
        return upstream_id
    return CHAT_ID_PREFIX + upstream_id


def json_text(value: object) -> str:
    """Compact JSON text, non-ASCII kept (the form OpenAI sends tool arguments in)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits, non-string keys
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a base64 data URL, None if ``url`` is not one."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    params = head.split(";")
    if not sep or "base64" not in params[1:]:
        return None
    try:
        base64.b64decode(data[:4096] + "=" * (-len(data[:4096]) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return params[0] or "application/octet-stream", data


def finish_in(value: object, *, has_calls: bool = False) -> FinishReason | None:
    """An upstream ``finish_reason`` as canonical. "stop" with tool calls made is "tool_calls"
    (Ollama and some Gemini-compat answers say "stop")."""
    if not isinstance(value, str) or not value:
        return None
    reason = _FINISH_IN.get(value, "stop")
    return "tool_calls" if reason == "stop" and has_calls else reason


def reasoning_text(obj: dict[str, Any]) -> str | None:
    """The reasoning of a message or delta, whatever the provider calls it (protocols.md §6):
    ``reasoning_content`` (DeepSeek, Qwen, Kimi, GLM), ``reasoning`` (vLLM, OpenRouter, Groq,
    Ollama) or ``reasoning_details`` text items (OpenRouter, MiniMax). OpenRouter sends both
    ``reasoning`` and ``reasoning_details`` with the same text, so the first found wins."""
    for key in ("reasoning_content", "reasoning"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    details = obj.get("reasoning_details")
    if not isinstance(details, list):
        return None
    texts = [
        d.get("text") or d.get("summary") or ""
        for d in details
        if isinstance(d, dict) and d.get("type") in ("reasoning.text", "reasoning.summary")
    ]
    joined = "".join(t for t in texts if isinstance(t, str))
    return joined or None


def _count(obj: object, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_in(raw: object) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens_details")
    cached = _count(prompt, "cached_tokens") or _count(raw, "prompt_cache_hit_tokens")  # DeepSeek
    return Usage(
        input_tokens=_count(raw, "prompt_tokens"),
        output_tokens=_count(raw, "completion_tokens"),
        cache_read_tokens=cached or _count(raw, "cached_tokens"),  # Kimi puts it at the top
        cache_write_tokens=_count(prompt, "cache_write_tokens"),
        reasoning_tokens=_count(raw.get("completion_tokens_details"), "reasoning_tokens"),
    )


def usage_out(usage: Usage) -> WireUsage:
    prompt: _PromptDetails = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        prompt["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def stream_error(raw: object) -> StreamError:
    """An upstream ``{"error": ...}`` value as a canonical stream error."""
    if not isinstance(raw, dict):
        return StreamError(str(raw) if raw else "upstream error", status=502)
    message = raw.get("message")
    err_type, code = raw.get("type"), raw.get("code")
    status = 502
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        status = code
    elif isinstance(code, str) and code in _ERROR_STATUS:
        status = _ERROR_STATUS[code]
    elif isinstance(err_type, str) and err_type in _ERROR_STATUS:
        status = _ERROR_STATUS[err_type]
    return StreamError(
        message if isinstance(message, str) and message else "upstream error",
        status=status,
        type=err_type if isinstance(err_type, str) and err_type else "server_error",
        code=code if isinstance(code, str) else None,
    )
