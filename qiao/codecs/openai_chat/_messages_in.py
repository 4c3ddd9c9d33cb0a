"""Client ``messages`` → canonical system prompt and messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...canonical import Document, Image, Message, Part, Reasoning, Text, ToolCall, ToolResult
from ...errors import InvalidRequest
from ._check import get_dict, get_list, get_str, require_str
from ._common import json_text, parse_data_url, signature_of

__all__ = ["decode_messages"]

_SYSTEM_ROLES = frozenset({"system", "developer"})
_Leaf = Text | Image | Document


class _FunctionIds:
    """Ids for the deprecated ``function_call`` / ``role: "function"`` pairs, which have none:
    a call gets a made-up id, and the next ``function`` message of that name answers it."""

    __slots__ = ("_count", "_open")

    def __init__(self) -> None:
        self._count = 0
        self._open: dict[str, list[str]] = {}

    def call(self, name: str) -> str:
        self._count += 1
        call_id = f"call_fn{self._count}"
        self._open.setdefault(name, []).append(call_id)
        return call_id

    def result(self, name: str) -> str:
        waiting = self._open.get(name)
        return waiting.pop(0) if waiting else self.call(name)


def decode_messages(raw: object) -> tuple[list[Text], list[Message]]:
    """``(system, messages)``: leading system/developer messages form the system prompt,
    later ones stay in place as ``role="system"`` messages."""
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    system: list[Text] = []
    messages: list[Message] = []
    ids = _FunctionIds()
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InvalidRequest(f"'{param}' must be an object.", param=param)
        role = msg.get("role")
        if role in _SYSTEM_ROLES:
            texts = _texts(msg.get("content"), f"{param}.content")
            if messages:
                messages.append(Message("system", list[Part](texts)))
            else:
                system.extend(texts)
            continue
        decode = _DECODERS.get(role) if isinstance(role, str) else None
        if decode is None:
            raise InvalidRequest(
                f"'{param}.role' {role!r} is not supported.", param=f"{param}.role"
            )
        messages.append(decode(msg, param, ids))
    return system, messages


# ----------------------------------------------------------------------------- content parts


def _texts(content: object, param: str) -> list[Text]:
    """Content that may only hold text (system, developer)."""
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of text parts.", param=param)
    out: list[Text] = []
    for j, part in enumerate(content):
        leaf = _part(part, f"{param}[{j}]")
        if not isinstance(leaf, Text):
            raise InvalidRequest(f"'{param}[{j}]' must be a text part.", param=f"{param}[{j}]")
        out.append(leaf)
    return out


def _leaves(content: object, param: str) -> list[_Leaf]:
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of parts.", param=param)
    return [_part(part, f"{param}[{j}]") for j, part in enumerate(content)]


def _part(part: object, param: str) -> _Leaf:
    if not isinstance(part, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    kind = part.get("type")
    decode = _PARTS.get(kind) if isinstance(kind, str) else None
    if decode is None:
        raise InvalidRequest(f"'{param}.type' {kind!r} is not supported.", param=f"{param}.type")
    return decode(part, param)


def _text_part(part: dict[str, Any], param: str) -> _Leaf:
    text = get_str(part, "text", f"{param}.text")
    if text is None:
        raise InvalidRequest(f"'{param}.text' is required.", param=f"{param}.text")
    return Text(text, cache=part.get("prompt_cache_breakpoint") is not None)


def _image_part(part: dict[str, Any], param: str) -> _Leaf:
    image = part.get("image_url")
    if isinstance(image, str):  # a common client shortcut
        image = {"url": image}
    if not isinstance(image, dict):
        raise InvalidRequest(f"'{param}.image_url' must be an object.", param=f"{param}.image_url")
    url = require_str(image, "url", f"{param}.image_url.url")
    detail = get_str(image, "detail", f"{param}.image_url.detail")
    if url.startswith("data:"):
        parsed = parse_data_url(url)
        if parsed is None:
            raise InvalidRequest(
                f"'{param}.image_url.url' is not a valid base64 data URL.",
                param=f"{param}.image_url.url",
            )
        return Image(media_type=parsed[0], data=parsed[1], detail=detail)
    if not url.startswith(("https://", "http://")):
        raise InvalidRequest(
            f"'{param}.image_url.url' must be an http(s) or data: URL.",
            param=f"{param}.image_url.url",
        )
    return Image(url=url, detail=detail)


def _file_part(part: dict[str, Any], param: str) -> _Leaf:
    file = get_dict(part, "file", f"{param}.file") or {}
    data = get_str(file, "file_data", f"{param}.file.file_data")
    name = get_str(file, "filename", f"{param}.file.filename")
    if data is None:
        # A file_id names a file in OpenAI's storage; no other provider can read it.
        raise InvalidRequest(
            f"'{param}.file' needs 'file_data': uploaded file ids cannot be translated.",
            param=f"{param}.file",
        )
    parsed = parse_data_url(data)
    if parsed is not None:
        return Document(media_type=parsed[0], data=parsed[1], title=name)
    media_type = "application/pdf" if (name or "").lower().endswith(".pdf") else None
    return Document(media_type=media_type, data=data, title=name)


def _audio_part(part: dict[str, Any], param: str) -> _Leaf:
    raise InvalidRequest(
        "audio input cannot be translated to this model's provider.", param=f"{param}.type"
    )


_PARTS: dict[str, Callable[[dict[str, Any], str], _Leaf]] = {
    "text": _text_part,
    "image_url": _image_part,
    "file": _file_part,
    "input_audio": _audio_part,
}


# ----------------------------------------------------------------------------- roles


def _user(msg: dict[str, Any], param: str, ids: _FunctionIds) -> Message:
    parts = list[Part](_leaves(msg.get("content"), f"{param}.content"))
    return Message("user", parts, name=get_str(msg, "name", f"{param}.name"))


def _assistant(msg: dict[str, Any], param: str, ids: _FunctionIds) -> Message:
    if msg.get("audio") is not None:
        raise InvalidRequest(
            f"'{param}.audio' (a previous audio answer) cannot be translated.",
            param=f"{param}.audio",
        )
    parts: list[Part] = []
    for key in ("reasoning_content", "reasoning"):
        reasoning = get_str(msg, key, f"{param}.{key}")
        if reasoning:
            parts.append(Reasoning(reasoning))
            break
    content = msg.get("content")
    if content is not None and content != "":
        for j, item in enumerate(_leaves_or_refusals(content, f"{param}.content")):
            if not isinstance(item, Text):
                raise InvalidRequest(
                    f"'{param}.content[{j}]' must be a text part.", param=f"{param}.content[{j}]"
                )
            parts.append(item)
    refusal = get_str(msg, "refusal", f"{param}.refusal")
    if refusal:
        parts.append(Text(refusal))
    calls = get_list(msg, "tool_calls", f"{param}.tool_calls") or []
    parts.extend(_tool_call(call, f"{param}.tool_calls[{k}]") for k, call in enumerate(calls))
    function_call = get_dict(msg, "function_call", f"{param}.function_call")
    if function_call is not None:
        name = require_str(function_call, "name", f"{param}.function_call.name")
        args = _arguments(function_call, f"{param}.function_call.arguments")
        parts.append(ToolCall(ids.call(name), name, args))
    return Message("assistant", parts, name=get_str(msg, "name", f"{param}.name"))


def _leaves_or_refusals(content: object, param: str) -> list[_Leaf]:
    if isinstance(content, list):  # assistant parts may be {"type": "refusal", "refusal": ...}
        content = [
            {"type": "text", "text": p.get("refusal")}
            if isinstance(p, dict) and p.get("type") == "refusal"
            else p
            for p in content
        ]
    return _leaves(content, param)


def _tool_call(call: object, param: str) -> ToolCall:
    if not isinstance(call, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    if call.get("type", "function") != "function":
        raise InvalidRequest(f"'{param}.type' must be 'function'.", param=f"{param}.type")
    function = get_dict(call, "function", f"{param}.function") or {}
    return ToolCall(
        id=require_str(call, "id", f"{param}.id"),
        name=require_str(function, "name", f"{param}.function.name"),
        arguments=_arguments(function, f"{param}.function.arguments"),
        signature=signature_of(call),
    )


def _arguments(function: dict[str, Any], param: str) -> str:
    value = function.get("arguments")
    if isinstance(value, str):
        return value  # kept as sent, even if it is not valid JSON
    if isinstance(value, dict):
        return json_text(value)
    raise InvalidRequest(f"'{param}' must be a string of JSON.", param=param)


def _tool(msg: dict[str, Any], param: str, ids: _FunctionIds) -> Message:
    call_id = require_str(msg, "tool_call_id", f"{param}.tool_call_id")
    content = _tool_content(msg.get("content"), f"{param}.content")
    return Message("tool", [ToolResult(call_id, content)])


def _function(msg: dict[str, Any], param: str, ids: _FunctionIds) -> Message:
    name = require_str(msg, "name", f"{param}.name")
    content = _tool_content(msg.get("content"), f"{param}.content")
    return Message("tool", [ToolResult(ids.result(name), content, name=name)])


def _tool_content(content: object, param: str) -> list[_Leaf]:
    return [] if content is None else _leaves(content, param)


_DECODERS: dict[str, Callable[[dict[str, Any], str, _FunctionIds], Message]] = {
    "user": _user,
    "assistant": _assistant,
    "tool": _tool,
    "function": _function,
}
