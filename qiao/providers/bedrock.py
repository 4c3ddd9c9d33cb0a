"""AWS Bedrock as an upstream for Claude: signing, URL, body and event-stream framing (pure).

Authentication is one of two, both plain headers added to the finished request:

- **SigV4** (:func:`sigv4_headers`) with an access key pair, plus a session token for temporary
  credentials. Sign *last*: every header passed in is signed (except the few that HTTP hops may
  rewrite), so a header added afterwards is fine but one changed afterwards breaks the signature.
- **A Bedrock API key** (:func:`bearer_headers`): ``Authorization: Bearer <key>``, the value AWS
  tools read from ``AWS_BEARER_TOKEN_BEDROCK``. No signing, no clock.

Bedrock's ``invoke`` API takes the Anthropic Messages body without ``model`` and ``stream`` and with
``anthropic_version`` (:func:`to_bedrock_body`). Beta features do not travel as the
``anthropic-beta`` header but as an ``anthropic_beta`` list in the body.

Streaming (``invoke-with-response-stream``) is not SSE but AWS event-stream binary frames
(``application/vnd.amazon.eventstream``). :class:`EventStreamDecoder` splits a byte stream into
frames; :func:`bedrock_chunks_to_sse` turns them back into the Anthropic SSE text that the
Anthropic stream decoder already reads, so Bedrock needs no stream translator of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import orjson

from ..errors import InvalidRequest, UpstreamProtocolError

__all__ = [
    "BEDROCK_VERSION",
    "MAX_FRAME_BYTES",
    "EventStreamDecoder",
    "Frame",
    "anthropic_error_type",
    "bearer_headers",
    "bedrock_chunks_to_sse",
    "encode_frame",
    "invoke_url",
    "sigv4_headers",
    "to_bedrock_body",
]

BEDROCK_VERSION = "bedrock-2023-05-31"
MAX_FRAME_BYTES = 16 * 1024 * 1024

# Bedrock exception names (``:exception-type``) → Anthropic error types; the rest are api_error.
_ERROR_TYPES = {
    "throttlingexception": "rate_limit_error",
    "servicequotaexceededexception": "rate_limit_error",
    "modelstreamerrorexception": "api_error",
    "internalserverexception": "api_error",
    "serviceunavailableexception": "overloaded_error",
    "modelnotreadyexception": "overloaded_error",
    "validationexception": "invalid_request_error",
    "modeltimeoutexception": "timeout_error",
    "accessdeniedexception": "permission_error",
    "resourcenotfoundexception": "not_found_error",
}

Frame = tuple[dict[str, str], bytes]
"""One event-stream message: its string headers and its payload."""

# ---------------------------------------------------------------------------------------------
# URL, body, bearer key

_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
# RFC 3986 path characters that yarl (aiohttp's URL type) would decode if we percent-encoded
# them. Leaving them raw keeps the URL we sign byte-identical to the request line aiohttp sends.
# '+' is not here: yarl keeps %2B as is.
_PATH_SAFE = ":@!$&'()*,;="


def invoke_url(region: str, model_id: str, *, stream: bool, base_url: str | None = None) -> str:
    """``{base}/model/{model_id}/invoke[-with-response-stream]``; ``base_url`` overrides the
    regional ``https://bedrock-runtime.{region}.amazonaws.com`` (VPC endpoints, tests)."""
    if not _REGION.fullmatch(region):
        raise ValueError(f"not an AWS region: {region!r}")
    if not model_id:
        raise ValueError("empty Bedrock model id")
    base = (base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
    action = "invoke-with-response-stream" if stream else "invoke"
    # An inference-profile ARN holds '/', which must stay inside one path segment.
    return f"{base}/model/{quote(model_id, safe=_PATH_SAFE)}/{action}"


def to_bedrock_body(
    anthropic_body: Mapping[str, Any], *, beta: str | Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``invoke`` body for an Anthropic Messages body.

    ``beta`` is the caller's ``anthropic-beta`` header (comma-separated) or a list of beta
    names; they are merged, in order and without repeats, into the body's ``anthropic_beta``.
    """
    out = {k: v for k, v in anthropic_body.items() if k not in ("model", "stream")}
    out.setdefault("anthropic_version", BEDROCK_VERSION)
    betas = _beta_names(out.get("anthropic_beta"), beta)
    if betas:
        out["anthropic_beta"] = betas
    else:
        out.pop("anthropic_beta", None)
    return out


def _beta_names(in_body: object, extra: str | Sequence[str] | None) -> list[str]:
    if in_body is None:
        in_body = []
    if not isinstance(in_body, list) or not all(isinstance(b, str) for b in in_body):
        raise InvalidRequest("anthropic_beta must be a list of strings", param="anthropic_beta")
    names: list[str] = list(in_body)
    if isinstance(extra, str):
        names += extra.split(",")
    elif extra is not None:
        names += extra
    return list(dict.fromkeys(n.strip() for n in names if n.strip()))


def bearer_headers(headers: Mapping[str, str], api_key: str) -> dict[str, str]:
    """``headers`` with ``Authorization: Bearer <api_key>`` (a Bedrock API key) instead of any
    other Authorization."""
    out = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    out["Authorization"] = f"Bearer {api_key}"
    return out


# ---------------------------------------------------------------------------------------------
# AWS Signature Version 4

_ALGORITHM = "AWS4-HMAC-SHA256"
# Never signed: proxies, tracers and HTTP clients may add or rewrite these (botocore's list).
_UNSIGNED = frozenset(
    "authorization baggage connection expect keep-alive proxy-authenticate proxy-authorization te"
    " traceparent tracestate trailer transfer-encoding upgrade user-agent x-amzn-trace-id".split()
)
_REPLACED = frozenset({"authorization", "x-amz-date", "x-amz-security-token"})


def sigv4_headers(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    access_key: str,
    secret_key: str,
    session_token: str | None = None,
    region: str,
    service: str = "bedrock",
    now: datetime,
) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session token) and
    ``Authorization``, signed with AWS Signature Version 4.

    The URL must be sent byte for byte as given: the canonical URI encodes each path segment
    as it appears on the wire once more (AWS's rule for services other than S3), so a raw
    ``:`` becomes ``%3A`` and an encoded ``%2F`` becomes ``%252F``.
    No ``x-amz-content-sha256`` header is added; Bedrock does not ask for one.
    """
    if now.tzinfo is None:
        raise ValueError("sigv4_headers needs a timezone-aware time")
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = {k: v for k, v in headers.items() if k.lower() not in _REPLACED}
    out["X-Amz-Date"] = stamp
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    parts = urlsplit(url)
    signed = _canonical_headers(out, parts.hostname or "", parts.port, parts.scheme)
    names = ";".join(signed)
    canonical = "\n".join(
        [
            method.upper(),
            _canonical_uri(parts.path),
            _canonical_query(parts.query),
            *(f"{name}:{value}" for name, value in signed.items()),
            "",
            names,
            hashlib.sha256(body or b"").hexdigest(),
        ]
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = f"{_ALGORITHM}\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = _signing_key(secret_key, stamp[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"{_ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={names}, Signature={signature}"
    )
    return out


def _signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _canonical_uri(path: str) -> str:
    # Qiao's URLs hold no dot segments, so RFC 3986 path normalisation has nothing to do.
    return quote(path or "/", safe="/")


def _canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe=""), quote(unquote(value), safe="")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _canonical_headers(
    headers: Mapping[str, str], hostname: str, port: int | None, scheme: str
) -> dict[str, str]:
    """Lower-cased name → trimmed value with inner runs of spaces collapsed, sorted by name."""
    out = {k.lower(): " ".join(v.split()) for k, v in headers.items()}
    for name in _UNSIGNED:
        out.pop(name, None)
    if "host" not in out:
        host = f"[{hostname}]" if ":" in hostname else hostname
        default = {"http": 80, "https": 443}.get(scheme)
        out["host"] = host if port in (None, default) else f"{host}:{port}"
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# AWS event-stream framing

# prelude: total length, headers length, CRC32 of those 8 bytes; the frame ends with a CRC32
# of everything before it.
_PRELUDE = struct.Struct(">III")
_CRC = struct.Struct(">I")
_U16 = struct.Struct(">H")
_OVERHEAD = _PRELUDE.size + _CRC.size
_BYTES, _STRING = 6, 7
# value sizes of the fixed-width header types: bool true/false, byte, short, int, long,
# timestamp, uuid. They carry nothing Bedrock's Claude stream needs, so they are skipped.
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _broken(why: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"Bedrock sent a malformed event stream: {why}")


class EventStreamDecoder:
    """Splits a byte stream, cut anywhere, into event-stream frames, checking both CRCs.

    Holds at most one partial frame; a frame announcing more than :data:`MAX_FRAME_BYTES` is
    refused before it is buffered.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        start = 0
        while (size := self._frame_size(start)) is not None and len(self._buf) - start >= size:
            frames.append(_parse_frame(bytes(self._buf[start : start + size])))
            start += size
        del self._buf[:start]
        return frames

    def close(self) -> None:
        """Call at the end of the stream: a partial frame left over means it was cut short."""
        if self._buf:
            raise _broken(f"stream ended inside a frame ({len(self._buf)} bytes left over)")

    def _frame_size(self, start: int) -> int | None:
        if len(self._buf) - start < _PRELUDE.size:
            return None
        total, headers_len, crc = _PRELUDE.unpack_from(self._buf, start)
        if zlib.crc32(self._buf[start : start + 8]) != crc:
            raise _broken("prelude CRC mismatch")
        if total > MAX_FRAME_BYTES:
            raise _broken(f"frame of {total} bytes exceeds {MAX_FRAME_BYTES}")
        if total < _OVERHEAD or headers_len > total - _OVERHEAD:
            raise _broken(f"impossible lengths (total {total}, headers {headers_len})")
        return int(total)


def _parse_frame(frame: bytes) -> Frame:
    _, headers_len, _ = _PRELUDE.unpack_from(frame)
    (crc,) = _CRC.unpack_from(frame, len(frame) - _CRC.size)
    if zlib.crc32(frame[: -_CRC.size]) != crc:
        raise _broken("message CRC mismatch")
    end = _PRELUDE.size + headers_len
    return _parse_headers(frame[_PRELUDE.size : end]), frame[end : -_CRC.size]


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    pos = 0
    try:
        while pos < len(raw):
            name_len = raw[pos]
            name = raw[pos + 1 : pos + 1 + name_len].decode()
            pos += 1 + name_len
            kind = raw[pos]
            pos += 1
            if kind in (_BYTES, _STRING):
                (value_len,) = _U16.unpack_from(raw, pos)
                value = raw[pos + 2 : pos + 2 + value_len]
                pos += 2 + value_len
                if kind == _STRING:
                    headers[name] = value.decode()
            elif kind in _FIXED:
                pos += _FIXED[kind]
            else:
                raise _broken(f"unknown header type {kind}")
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise _broken(f"bad headers ({type(exc).__name__})") from None
    if pos != len(raw):
        raise _broken("headers overrun their length")
    return headers


def encode_frame(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream frame with string headers (for fakes and tests)."""
    parts = []
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        if len(n) > 255 or len(v) > 0xFFFF:
            raise ValueError(f"event-stream header {name!r} is too long")
        parts.append(bytes([len(n)]) + n + bytes([_STRING]) + _U16.pack(len(v)) + v)
    raw_headers = b"".join(parts)
    prelude = struct.pack(">II", _OVERHEAD + len(raw_headers) + len(payload), len(raw_headers))
    message = prelude + _CRC.pack(zlib.crc32(prelude)) + raw_headers + payload
    return message + _CRC.pack(zlib.crc32(message))


# ---------------------------------------------------------------------------------------------
# frames → Anthropic SSE

_EVENT_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def anthropic_error_type(bedrock_error: str) -> str:
    """The Anthropic error type for a Bedrock exception name such as ``throttlingException``."""
    return _ERROR_TYPES.get(bedrock_error.lower(), "api_error")


def bedrock_chunks_to_sse(frames: Iterable[tuple[Mapping[str, str], bytes]]) -> bytes:
    """Anthropic SSE text for decoded frames: ``chunk`` events become the Anthropic events they
    wrap; exceptions and errors become ``event: error``; other frames are dropped."""
    out = bytearray()
    for headers, payload in frames:
        kind = headers.get(":message-type", "event")
        if kind == "event" and headers.get(":event-type") == "chunk":
            out += _chunk_to_sse(payload)
        elif kind == "exception":
            out += _error_sse(headers.get(":exception-type", ""), _exception_message(payload))
        elif kind == "error":
            out += _error_sse(headers.get(":error-code", ""), headers.get(":error-message", ""))
    return bytes(out)


def _chunk_to_sse(payload: bytes) -> bytes:
    try:
        data = base64.b64decode(orjson.loads(payload)["bytes"], validate=True)
        event = orjson.loads(data)
        name = event["type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _broken(f"bad chunk payload ({type(exc).__name__})") from None
    if not isinstance(name, str) or not _EVENT_NAME.fullmatch(name):
        raise _broken("chunk event has no usable type")
    if b"\n" in data or b"\r" in data:
        data = orjson.dumps(event)  # keep the SSE data on one line
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def _exception_message(payload: bytes) -> str:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode(errors="replace")
    if isinstance(body, dict):
        message = body.get("message", body.get("Message"))
        if isinstance(message, str):
            return message
    return payload.decode(errors="replace")


def _error_sse(bedrock_error: str, message: str) -> bytes:
    error = {"type": anthropic_error_type(bedrock_error), "message": message or bedrock_error}
    return b"event: error\ndata: " + orjson.dumps({"type": "error", "error": error}) + b"\n\n"
