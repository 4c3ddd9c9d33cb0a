"""Errors in Anthropic's shape, both ways (protocols.md §3.6, §5.11)."""

from __future__ import annotations

from typing import Any, cast

import orjson

from ...canonical import StreamError
from ...errors import QiaoError
from ._maps import error_type
from ._wire import ErrorBody, ErrorObject


def error_body(err: QiaoError) -> tuple[int, dict[str, Any]]:
    """Status and body for an Anthropic client; our 503 is sent as 529 ``overloaded_error``."""
    status, kind = error_type(err.status)
    return status, cast(dict[str, Any], _body(kind, err.message))


def stream_error_body(err: StreamError) -> ErrorBody:
    return _body(error_type(err.status)[1], err.message)


def _body(kind: str, message: str) -> ErrorBody:
    return ErrorBody(type="error", error=ErrorObject(type=kind, message=message))


def error_message(status: int, body: bytes) -> str | None:
    """``error.message`` of an Anthropic error body, or None when the body has none."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else None
