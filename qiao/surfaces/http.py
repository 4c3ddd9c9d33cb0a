"""HTTP plumbing shared by the surfaces: request ids, body reading, response headers."""

from __future__ import annotations

import asyncio
import itertools
import os
import time

from aiohttp import web

from ..errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

__all__ = ["new_request_id", "qiao_headers", "read_body", "require_json"]

_PREFIX = os.urandom(5).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """Unique per process start (random prefix) and cheap (a counter)."""
    return f"req_{_PREFIX}{next(_COUNTER):010x}"


async def read_body(request: web.BaseRequest, max_bytes: int, timeout_s: float) -> bytes:
    """The request body, or a 413/408/400 — never more than ``max_bytes`` in memory."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"Request body is {length} bytes; the limit is {max_bytes}.")
    content = request.content
    try:
        async with asyncio.timeout(timeout_s):
            if length is not None:
                data = await content.readexactly(length)
            else:
                parts: list[bytes] = []
                size = 0
                while chunk := await content.readany():
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"Request body exceeds the limit of {max_bytes} bytes."
                        )
                    parts.append(chunk)
                data = b"".join(parts)
    except TimeoutError:
        raise RequestTimeout(f"Request body not received within {timeout_s:g} s.") from None
    except asyncio.IncompleteReadError:
        raise InvalidRequest("Request body is shorter than its Content-Length.") from None
    if not data:
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    return data


def require_json(request: web.BaseRequest) -> None:
    """A 415 unless the body is declared JSON (``application/json`` or ``…+json``).

    Browsers send ``text/plain``, form and multipart bodies to any origin without a CORS
    preflight; refusing them keeps a web page from spending a key it can put in a URL (the
    Gemini surface accepts ``?key=``). A request with no Content-Type at all is read as JSON
    (some command-line clients send none; a browser cannot send a body without one, except as
    an untyped Blob, which gets no credentials either).
    """
    declared = request.headers.get("Content-Type")
    if declared is None:
        return
    media = declared.partition(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    shown = media[:64] or "empty"
    raise UnsupportedMediaType(
        f"Content-Type {shown!r} is not accepted: send the body as JSON with "
        "'Content-Type: application/json'."
    )


def qiao_headers(request_id: str, provider: str | None, overhead_s: float) -> dict[str, str]:
    headers = {
        "x-request-id": request_id,
        "request-id": request_id,  # where the anthropic SDK looks
        "x-qiao-overhead-ms": f"{max(0.0, overhead_s) * 1000:.3f}",
    }
    if provider:
        headers["x-qiao-provider"] = provider
    return headers


def now() -> float:
    return time.perf_counter()
