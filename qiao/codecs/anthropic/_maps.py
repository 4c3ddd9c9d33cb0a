"""The tables shared by the response, stream and error halves: stop reasons, usage, error types."""

from __future__ import annotations

from typing import Any

from ...canonical import FinishReason, Usage
from . import _check as check
from ._wire import OutputTokensDetails, UsageBody

# canonical finish reason -> Anthropic stop_reason (protocols.md §5.7)
STOP_REASON_OUT: dict[FinishReason | None, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
    None: "end_turn",
}
# Anthropic stop_reason -> canonical; an unknown future reason reads as "stop"
STOP_REASON_IN: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# our status -> (status sent to an Anthropic client, error.type) (protocols.md §3.6, §5.11)
ERROR_TYPES: dict[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    402: (402, "billing_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    408: (408, "timeout_error"),
    413: (413, "request_too_large"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    502: (502, "api_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
    529: (529, "overloaded_error"),
}
# Anthropic error.type met mid-stream -> (our status, canonical OpenAI-style type)
STREAM_ERRORS: dict[str, tuple[int, str]] = {
    "overloaded_error": (503, "service_unavailable_error"),
    "rate_limit_error": (429, "rate_limit_error"),
    "timeout_error": (504, "timeout_error"),
    "api_error": (502, "upstream_error"),
}
STREAM_ERROR_DEFAULT = (502, "upstream_error")


def error_type(status: int) -> tuple[int, str]:
    fallback = (status, "api_error") if status >= 500 else (status, "invalid_request_error")
    return ERROR_TYPES.get(status, fallback)


def stop_reason_out(reason: FinishReason | None, stop_sequence: str | None) -> str:
    if reason == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return STOP_REASON_OUT[reason]


def usage_out(usage: Usage | None) -> UsageBody:
    """Canonical usage -> Anthropic's, whose ``input_tokens`` excludes cache reads and writes."""
    u = usage or Usage()
    body = UsageBody(
        input_tokens=max(0, u.input_tokens - u.cache_read_tokens - u.cache_write_tokens),
        output_tokens=u.output_tokens,
        cache_creation_input_tokens=u.cache_write_tokens,
        cache_read_input_tokens=u.cache_read_tokens,
    )
    if u.reasoning_tokens:
        body["output_tokens_details"] = OutputTokensDetails(thinking_tokens=u.reasoning_tokens)
    return body


def usage_in(body: dict[str, Any], param: str, prior: Usage | None = None) -> Usage:
    """Anthropic usage -> canonical. Absent fields keep their ``prior`` value (stream deltas
    are cumulative but may omit the input counts)."""
    base = prior or Usage()
    fields = (
        ("input_tokens", base.input_tokens - base.cache_read_tokens - base.cache_write_tokens),
        ("cache_read_input_tokens", base.cache_read_tokens),
        ("cache_creation_input_tokens", base.cache_write_tokens),
        ("output_tokens", base.output_tokens),
    )
    raw, read, write, out = (
        _count(body, key, f"{param}.{key}", default) for key, default in fields
    )
    details = check.optional(
        body, "output_tokens_details", f"{param}.output_tokens_details", check.obj
    )
    thinking = base.reasoning_tokens
    if details is not None:
        thinking = _count(details, "thinking_tokens", f"{param}.output_tokens_details", thinking)
    return Usage(
        input_tokens=raw + read + write,
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=thinking,
    )


def _count(body: dict[str, Any], key: str, param: str, default: int) -> int:
    value = check.optional(body, key, param, check.integer)
    return default if value is None else value
