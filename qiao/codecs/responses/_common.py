"""Pieces the response and stream encoders share: ids, envelopes, usage, the response object."""

from __future__ import annotations

import secrets
import time
from typing import Any, Final

from ...canonical import FinishReason, Request, Usage

__all__ = [
    "CALL_SIGNATURE",
    "REDACTED",
    "item_id",
    "reasoning_item",
    "response_id",
    "response_object",
    "status_of",
    "usage_out",
]

# ``encrypted_content`` envelopes for what a reasoning item's opaque field carries besides a
# plain reasoning signature: Anthropic's redacted thinking, and a Gemini thought signature of
# the function call that follows the item (function_call items have no field for it).
REDACTED: Final = "qiao-redacted:"
CALL_SIGNATURE: Final = "qiao-call-signature:"


def now() -> int:
    return int(time.time())


def response_id(upstream_id: str | None) -> str:
    """A ``resp_`` id: the given one, prefixed if it lacks the prefix, or a new one."""
    if not upstream_id:
        return "resp_" + secrets.token_hex(12)
    return upstream_id if upstream_id.startswith("resp_") else "resp_" + upstream_id


def item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def reasoning_item(
    rid: str, text: str, signature: str | None, redacted: str | None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": rid,
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if redacted is not None:
        item["encrypted_content"] = REDACTED + redacted
    elif signature is not None:
        item["encrypted_content"] = signature
    return item


def usage_out(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def status_of(reason: FinishReason | None) -> tuple[str, dict[str, Any] | None, Any]:
    """``(status, incomplete_details, error)`` of a finish reason."""
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}, None
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}, None
    if reason == "error":
        error = {"code": "server_error", "message": "The model stopped with an error."}
        return "failed", None, error
    return "completed", None, None


def _tool_choice(request: Request | None) -> Any:
    choice = request.tool_choice if request is not None else None
    if choice is None:
        return "auto"
    if choice.mode == "tool":
        return {"type": "function", "name": choice.name or ""}
    return choice.mode


def _text(request: Request | None) -> dict[str, Any]:
    fmt = request.response_format if request is not None else None
    if fmt is None or fmt.type == "text" or (fmt.type == "json_schema" and fmt.schema is None):
        return {"format": {"type": "text"}}
    if fmt.type == "json_object":
        return {"format": {"type": "json_object"}}
    return {
        "format": {
            "type": "json_schema",
            "name": fmt.name or "response",
            "schema": fmt.schema,
            "strict": fmt.strict,
        }
    }


_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})


def response_object(
    *,
    rid: str,
    created: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete: dict[str, Any] | None = None,
    error: Any = None,
    request: Request | None = None,
) -> dict[str, Any]:
    """The ``response`` object of protocols.md §2.8; the echoed settings come from
    ``request`` when known (the stream encoder has it), defaults otherwise."""
    reasoning = request.reasoning if request is not None else None
    effort = reasoning.effort if reasoning is not None else None
    choice = request.tool_choice if request is not None else None
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": None,
        "max_output_tokens": request.max_tokens if request is not None else None,
        "model": model,
        "output": output,
        "parallel_tool_calls": not (choice is not None and choice.parallel is False),
        "previous_response_id": None,
        "reasoning": {"effort": effort if effort in _EFFORTS else None, "summary": None},
        "store": False,
        "temperature": request.temperature if request is not None else None,
        "text": _text(request),
        "tool_choice": _tool_choice(request),
        "tools": [],
        "top_p": request.top_p if request is not None else None,
        "truncation": "disabled",
        "usage": usage_out(usage) if usage is not None or status != "in_progress" else None,
        "user": None,
        "metadata": {
            k: v
            for k, v in ((request.metadata if request is not None else None) or {}).items()
            if isinstance(v, str)
        },
    }
    return body
