"""Whole answers and errors: canonical ⇄ ``chat.completion`` JSON."""

from __future__ import annotations

import secrets
from typing import Any, NotRequired, TypedDict, cast

import orjson

from ...canonical import Choice, Message, Part, Reasoning, Request, Response, Text, ToolCall
from ...errors import QiaoError, UpstreamProtocolError
from ._common import (
    WireToolCall,
    WireUsage,
    arguments_text,
    chat_id,
    finish_in,
    now,
    reasoning_text,
    signature_of,
    tool_call_out,
    usage_in,
    usage_out,
)
from ._think import ThinkSplitter

__all__ = ["decode_response", "encode_response", "error_body", "error_message"]


class _Message(TypedDict):
    role: str
    content: str | None
    refusal: None
    annotations: list[Any]
    tool_calls: NotRequired[list[WireToolCall]]
    reasoning_content: NotRequired[str]


class _Choice(TypedDict):
    index: int
    message: _Message
    logprobs: None
    finish_reason: str


class _Completion(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: list[_Choice]
    usage: NotRequired[WireUsage]


class _Error(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


# ----------------------------------------------------------------------------- client role


def encode_response(resp: Response, request: Request | None = None) -> dict[str, Any]:
    """A canonical answer as a ``chat.completion`` object (protocols.md §2.3); ``request`` is
    not needed."""
    body: _Completion = {
        "id": chat_id(resp.id),
        "object": "chat.completion",
        "created": resp.created or now(),
        "model": resp.model,
        "choices": [_choice_out(c) for c in resp.choices],
    }
    if resp.usage is not None:
        body["usage"] = usage_out(resp.usage)
    return cast(dict[str, Any], body)


def _choice_out(choice: Choice) -> _Choice:
    parts = choice.message.parts
    texts = [p.text for p in parts if isinstance(p, Text)]
    calls = [tool_call_out(p) for p in parts if isinstance(p, ToolCall)]
    reasoning = "".join(p.text for p in parts if isinstance(p, Reasoning))
    message: _Message = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return {
        "index": choice.index,
        "message": message,
        "logprobs": None,
        "finish_reason": choice.finish_reason or "stop",
    }


def error_body(err: QiaoError) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI-shaped body of an error (protocols.md §2.10)."""
    payload: _Error = {
        "message": err.message,
        "type": err.type,
        "param": err.param,
        "code": err.code,
    }
    return err.status, {"error": payload}


# ----------------------------------------------------------------------------- provider role


def decode_response(body: dict[str, Any]) -> Response:
    """An upstream ``chat.completion`` as canonical, provider quirks normalised (§6)."""
    if not isinstance(body, dict):
        raise UpstreamProtocolError("upstream answer is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list):
        detail = _message_of(body)
        raise UpstreamProtocolError(
            f"upstream answered with an error: {detail}"
            if detail
            else "upstream answer has no 'choices'"
        )
    created = body.get("created")
    return Response(
        id=_str(body.get("id")),
        model=_str(body.get("model")),
        choices=[_choice_in(c, i) for i, c in enumerate(choices)],
        usage=usage_in(body.get("usage")),
        created=created if isinstance(created, int) and not isinstance(created, bool) else 0,
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _choice_in(raw: object, position: int) -> Choice:
    if not isinstance(raw, dict):
        raise UpstreamProtocolError("upstream answer has a malformed choice")
    index = raw.get("index")
    message = raw.get("message")
    parts = _parts_in(message if isinstance(message, dict) else {})
    has_calls = any(isinstance(p, ToolCall) for p in parts)
    return Choice(
        index=index if isinstance(index, int) and not isinstance(index, bool) else position,
        message=Message("assistant", parts),
        finish_reason=finish_in(raw.get("finish_reason"), has_calls=has_calls) or "stop",
    )


def _parts_in(message: dict[str, Any]) -> list[Part]:
    reasoning = reasoning_text(message) or ""
    thought, text = _content_in(message.get("content"))
    parts: list[Part] = []
    if reasoning or thought:
        parts.append(Reasoning(reasoning + thought))
    if text:
        parts.append(Text(text))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(Text(refusal))
    calls = message.get("tool_calls")
    for k, call in enumerate(calls if isinstance(calls, list) else []):
        parts.append(_call_in(call, k))
    return parts


def _content_in(content: object) -> tuple[str, str]:
    """``(reasoning, text)`` of a message's content: a leading ``<think>`` block is reasoning
    (MiniMax, raw models); Magistral sends an array with ``thinking`` chunks."""
    if isinstance(content, str):
        splitter = ThinkSplitter()
        pieces = splitter.feed(content) + splitter.flush()
        return "".join(t for r, t in pieces if r), "".join(t for r, t in pieces if not r)
    thought: list[str] = []
    text: list[str] = []
    for chunk in content if isinstance(content, list) else []:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("type") == "text" and isinstance(chunk.get("text"), str):
            text.append(chunk["text"])
        elif chunk.get("type") == "thinking":
            inner = chunk.get("thinking")
            thought.append(_content_in(inner)[1] if isinstance(inner, list) else _str(inner))
    return "".join(thought), "".join(text)


def _call_in(raw: object, position: int) -> ToolCall:
    if not isinstance(raw, dict):
        raise UpstreamProtocolError("upstream answer has a malformed tool call")
    function = raw.get("function")
    function = function if isinstance(function, dict) else {}
    call_id = raw.get("id")
    return ToolCall(
        id=call_id if isinstance(call_id, str) and call_id else f"call_{secrets.token_hex(8)}",
        name=_str(function.get("name")),
        arguments=arguments_text(function.get("arguments")),
        signature=signature_of(raw),
    )


def error_message(status: int, body: bytes) -> str | None:
    """The message of an upstream error body: OpenAI's ``error.message``, a string ``error``,
    or the top-level ``message`` / ``detail`` some compatible servers send."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, list) and obj:
        obj = obj[0]
    return _message_of(obj) if isinstance(obj, dict) else None


def _message_of(obj: dict[str, Any]) -> str | None:
    error = obj.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
    if isinstance(error, str) and error:
        return error
    for key in ("message", "detail"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None
