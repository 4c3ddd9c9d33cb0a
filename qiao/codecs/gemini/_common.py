"""What every part of the Gemini codec shares: the rename tables, the reader of wire objects
(both casings), thought-signature provenance, finish reasons, usage and error statuses."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final, TypedDict

import orjson

from ...canonical import FinishReason, Usage
from ...errors import QiaoError

# ----------------------------------------------------------------------------- rename tables

# canonical ``Request`` field ↔ ``generationConfig`` key, for plain numbers.
GEN_NUMBERS: Final = (
    ("max_tokens", "maxOutputTokens", int),
    ("temperature", "temperature", float),
    ("top_p", "topP", float),
    ("top_k", "topK", int),
    ("seed", "seed", int),
    ("presence_penalty", "presencePenalty", float),
    ("frequency_penalty", "frequencyPenalty", float),
)

# Gemini finishReason → canonical. Anything not listed means "stop".
_FINISH_IN: Final[dict[str, FinishReason]] = {
    "MAX_TOKENS": "length",
    **dict.fromkeys(
        (
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
            "MODEL_ARMOR",
        ),
        "content_filter",
    ),
    **dict.fromkeys(
        (
            "MALFORMED_FUNCTION_CALL",
            "UNEXPECTED_TOOL_CALL",
            "TOO_MANY_TOOL_CALLS",
            "MISSING_THOUGHT_SIGNATURE",
            "MALFORMED_RESPONSE",
        ),
        "error",
    ),
}
# canonical → Gemini. tool_calls is STOP, as real Gemini says for a turn of function calls.
FINISH_OUT: Final[dict[FinishReason, str]] = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "error": "OTHER",
}

# HTTP status ↔ google.rpc status name.
_STATUS_NAMES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# HTTP status → the OpenAI-style error type of a canonical ``StreamError``.
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}

# The value Gemini documents for a function call whose thought signature is unknown.
SKIP_SIGNATURE: Final = "skip_thought_signature_validator"
# A canonical ``Reasoning.signature`` minted by Gemini carries this prefix; others are foreign.
GEMINI_TAG: Final = "gemini:"
# A foreign reasoning signature handed to a Gemini client travels in this base64 envelope.
_ENVELOPE: Final = b"qiao.reasoning\x00"


class GError(TypedDict):
    code: int
    message: str
    status: str


class GErrorBody(TypedDict):
    error: GError


class GUsage(TypedDict, total=False):
    promptTokenCount: int
    candidatesTokenCount: int
    thoughtsTokenCount: int
    cachedContentTokenCount: int
    totalTokenCount: int


# ----------------------------------------------------------------------------- reading


_CAMEL = re.compile(r"_([a-z0-9])")


def camel(key: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), key) if "_" in key else key


class Node:
    """A wire JSON object with its keys in camelCase (proto3 JSON accepts both casings), read
    with type checks. Bad input raises ``error`` (``InvalidRequest`` for a client's request,
    ``UpstreamProtocolError`` for an upstream's answer) naming the JSON path."""

    __slots__ = ("_d", "error", "path")

    def __init__(self, value: object, path: str, error: type[QiaoError]) -> None:
        self.path = path
        self.error = error
        if not isinstance(value, dict):
            raise error(f"{path or 'body'} must be a JSON object", param=path or None)
        d: dict[str, object] = {}
        for key, item in value.items():
            name = camel(str(key))
            if name in d:
                raise error(f"{self._at(name)} is given twice (camelCase and snake_case)")
            d[name] = item
        self._d = d

    def _at(self, key: str) -> str:
        if not key:
            return self.path or "body"
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, what: str) -> QiaoError:
        return self.error(f"{self._at(key)} {what}", param=self._at(key))

    def keys(self) -> set[str]:
        return set(self._d)

    def raw(self, key: str) -> object:
        return self._d.get(key)

    def text(self, key: str) -> str | None:
        value = self._d.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self.fail(key, "must be a string")

    def flag(self, key: str) -> bool | None:
        value = self._d.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(key, "must be a boolean")

    def integer(self, key: str) -> int | None:
        value = self._d.get(key)
        if value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,19}", value):
            return int(value)  # proto3 JSON writes 64-bit integers as strings
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self.fail(key, "must be an integer")

    def number(self, key: str) -> float | None:
        value = self._d.get(key)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise self.fail(key, "must be a number")

    def obj(self, key: str) -> Node | None:
        value = self._d.get(key)
        return None if value is None else Node(value, self._at(key), self.error)

    def objs(self, key: str) -> list[Node]:
        return [Node(v, f"{self._at(key)}[{i}]", self.error) for i, v in enumerate(self.array(key))]

    def array(self, key: str) -> list[object]:
        value = self._d.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        raise self.fail(key, "must be an array")

    def texts(self, key: str) -> list[str]:
        items = self.array(key)
        if all(isinstance(s, str) for s in items):
            return [str(s) for s in items]
        raise self.fail(key, "must be an array of strings")


# ----------------------------------------------------------------------------- JSON values


def json_text(value: object) -> str:
    return orjson.dumps(value).decode()


def args_object(arguments: str) -> dict[str, object]:
    """``ToolCall.arguments`` as the object Gemini wants. Empty text is ``{}``; text that is not
    a JSON object is kept whole as ``{"_raw": text}`` (a truncated call must not wedge a chat)."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


# ----------------------------------------------------------------------------- signatures


def signature_in(wire: str | None) -> str | None:
    """A part's ``thoughtSignature`` as a canonical ``Reasoning.signature``."""
    if not wire:
        return None
    foreign = _unwrap(wire)
    if foreign is not None:
        return foreign.get("signature")
    return GEMINI_TAG + wire


def redacted_in(wire: str | None) -> str | None:
    foreign = _unwrap(wire) if wire else None
    return foreign.get("redacted") if foreign else None


def signature_out(signature: str | None, redacted: str | None = None) -> str | None:
    """A canonical reasoning signature (and redacted data) as a ``thoughtSignature`` for a
    Gemini *client*: Gemini's own value bare, anything else in a base64 envelope the client
    echoes back untouched (its SDK insists on base64)."""
    if signature is not None and signature.startswith(GEMINI_TAG) and redacted is None:
        return signature[len(GEMINI_TAG) :]
    inner = {k: v for k, v in (("signature", signature), ("redacted", redacted)) if v is not None}
    if not inner:
        return None
    return base64.b64encode(_ENVELOPE + orjson.dumps(inner)).decode()


def gemini_signature(signature: str | None) -> str | None:
    """The bare Gemini value of a canonical reasoning signature, None if foreign or absent."""
    if signature is None or not signature.startswith(GEMINI_TAG):
        return None
    return signature[len(GEMINI_TAG) :] or None


def call_signature_in(wire: str | None) -> str | None:
    """A functionCall's ``thoughtSignature`` as ``ToolCall.signature`` (the skip value is no
    signature: Qiao put it there)."""
    return None if not wire or wire == SKIP_SIGNATURE else wire


def _unwrap(wire: str) -> dict[str, str] | None:
    if not wire.startswith("cWlhby5yZWFzb25pbmc"):  # base64 of the envelope's first bytes
        return None
    try:
        raw = base64.b64decode(wire.replace("-", "+").replace("_", "/") + "==")
        value = orjson.loads(raw[len(_ENVELOPE) :]) if raw.startswith(_ENVELOPE) else None
    except (binascii.Error, ValueError):
        return None
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return {str(k): str(v) for k, v in value.items()}
    return None


# ----------------------------------------------------------------------------- finish, usage


def finish_in(reason: str | None, called: bool) -> FinishReason | None:
    """A candidate's finishReason; a candidate that called functions and stopped normally
    finished with ``tool_calls`` (Gemini says STOP)."""
    if reason is None:
        return "tool_calls" if called else None
    mapped = _FINISH_IN.get(reason, "stop")
    return "tool_calls" if called and mapped == "stop" else mapped


def usage_in(meta: Node) -> Usage:
    prompt = (meta.integer("promptTokenCount") or 0) + (
        meta.integer("toolUsePromptTokenCount") or 0
    )
    thoughts = meta.integer("thoughtsTokenCount") or 0
    return Usage(
        input_tokens=prompt,
        output_tokens=(meta.integer("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=meta.integer("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


def usage_out(usage: Usage) -> GUsage:
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    meta = GUsage(
        promptTokenCount=usage.input_tokens,
        candidatesTokenCount=usage.output_tokens - reasoning,
        totalTokenCount=usage.total_tokens,
    )
    if reasoning:
        meta["thoughtsTokenCount"] = reasoning
    if usage.cache_read_tokens:
        meta["cachedContentTokenCount"] = usage.cache_read_tokens
    return meta


# ----------------------------------------------------------------------------- errors


def status_name(status: int) -> str:
    name = _STATUS_NAMES.get(status)
    if name is not None:
        return name
    return "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_payload(status: int, message: str) -> GErrorBody:
    return GErrorBody(error=GError(code=status, message=message, status=status_name(status)))
