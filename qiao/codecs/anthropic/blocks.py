"""Content blocks ⇄ canonical parts, shared by the request and response halves.

Decoding checks every field (a bad block raises ``InvalidRequest`` with its path); encoding
follows the drop rules listed in the package docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ...canonical import Document, Image, Part, Reasoning, Text, ToolCall, ToolResult
from ...errors import InvalidRequest
from . import _check as check
from ._wire import (
    Base64Source,
    Block,
    CacheControl,
    DocumentBlock,
    ImageBlock,
    Json,
    PlainTextSource,
    RedactedThinkingBlock,
    ResultContent,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UrlSource,
)

RAW_ARGUMENTS_KEY = "_raw"  # tool arguments that are not a JSON object travel as {"_raw": text}
MEDIA = frozenset({"text", "image", "document"})  # what a user turn or a tool result may hold
ASSISTANT = frozenset({"text", "thinking", "redacted_thinking", "tool_use"})
SYSTEM = frozenset({"text"})
_ONLY_ANTHROPIC = "works only with an Anthropic upstream"


# ----------------------------------------------------------------------------- wire -> canonical


def decode_content(content: object, param: str, allowed: frozenset[str]) -> list[Part]:
    """A message's ``content`` (string or blocks) -> parts; a block type outside ``allowed``
    is refused."""
    if isinstance(content, str):
        return [Text(content)] if content else []
    blocks = check.array(content, param)
    return [decode_block(block, f"{param}[{i}]", allowed) for i, block in enumerate(blocks)]


def decode_block(value: object, param: str, allowed: frozenset[str]) -> Part:
    block = check.obj(value, param)
    kind = check.string(check.required(block, "type", f"{param}.type"), f"{param}.type")
    decoder = _DECODERS.get(kind)
    if decoder is None or kind not in allowed:
        raise check.bad(f"{param}.type", _refusal(kind))
    return decoder(block, param)


def block_type(value: object) -> str | None:
    return value.get("type") if isinstance(value, dict) else None


def _refusal(kind: str) -> str:
    if kind.endswith("_tool_result") or kind in ("server_tool_use", "mcp_tool_use"):
        return f"content block type {kind!r} {_ONLY_ANTHROPIC}"
    if kind in _DECODERS or kind == "tool_result":
        return f"content block type {kind!r} is not allowed here"
    return f"content block type {kind!r} is not supported by Qiao's Anthropic translation"


def _text(block: Json, param: str) -> Text:
    text = check.string(check.required(block, "text", f"{param}.text"), f"{param}.text")
    cache = check.optional(block, "cache_control", f"{param}.cache_control", check.obj)
    return Text(text, cache=cache is not None)


def _image(block: Json, param: str) -> Image:
    source = check.obj(check.required(block, "source", f"{param}.source"), f"{param}.source")
    kind, data, url = _source(source, f"{param}.source")
    if kind == "base64":
        return Image(media_type=_field(source, "media_type", f"{param}.source"), data=data)
    if kind == "url":
        return Image(url=url)
    raise check.bad(f"{param}.source.type", f"image source type {kind!r} {_UNSUPPORTED_SOURCE}")


def _document(block: Json, param: str) -> Document:
    source = check.obj(check.required(block, "source", f"{param}.source"), f"{param}.source")
    title = check.optional(block, "title", f"{param}.title", check.string)
    kind, data, url = _source(source, f"{param}.source")
    media_type = check.optional(source, "media_type", f"{param}.source.media_type", check.string)
    if kind == "base64":
        return Document(media_type=media_type, data=data, title=title)
    if kind == "text":
        return Document(media_type=media_type or "text/plain", text=data, title=title)
    if kind == "url":
        return Document(url=url, title=title)
    raise check.bad(f"{param}.source.type", f"document source type {kind!r} {_UNSUPPORTED_SOURCE}")


_UNSUPPORTED_SOURCE = "is not supported for non-Anthropic upstreams (use base64 or url)"


def _source(source: Json, param: str) -> tuple[str, str | None, str | None]:
    kind = check.string(check.required(source, "type", f"{param}.type"), f"{param}.type")
    if kind in ("base64", "text"):
        return kind, _field(source, "data", param), None
    if kind == "url":
        return kind, None, _field(source, "url", param)
    return kind, None, None


def _field(body: Json, key: str, param: str) -> str:
    return check.string(check.required(body, key, f"{param}.{key}"), f"{param}.{key}")


def _tool_use(block: Json, param: str) -> ToolCall:
    value = block.get("input")
    arguments = {} if value is None else check.obj(value, f"{param}.input")
    return ToolCall(
        id=_field(block, "id", param),
        name=_field(block, "name", param),
        arguments=json_text(arguments, f"{param}.input"),
    )


def _thinking(block: Json, param: str) -> Reasoning:
    signature = check.optional(block, "signature", f"{param}.signature", check.string)
    return Reasoning(text=_field(block, "thinking", param), signature=signature or None)


def _redacted(block: Json, param: str) -> Reasoning:
    return Reasoning(redacted=_field(block, "data", param))


def decode_tool_result(block: Json, param: str, name: str | None) -> ToolResult:
    content = block.get("content")
    parts = [] if content is None else decode_content(content, f"{param}.content", MEDIA)
    is_error = check.optional(block, "is_error", f"{param}.is_error", check.boolean)
    return ToolResult(
        call_id=_field(block, "tool_use_id", param),
        content=[p for p in parts if isinstance(p, Text | Image | Document)],
        is_error=bool(is_error),
        name=name,
    )


_DECODERS: dict[str, Callable[[Json, str], Part]] = {
    "text": _text,
    "image": _image,
    "document": _document,
    "tool_use": _tool_use,
    "thinking": _thinking,
    "redacted_thinking": _redacted,
}


def json_text(value: Any, param: str) -> str:
    """Tool ``input`` object -> canonical JSON text (compact, UTF-8 kept)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise check.bad(param, f"cannot be serialised as JSON: {exc}") from None


def tool_input(arguments: str) -> Json:
    """Canonical JSON text -> Anthropic ``input``: empty text is ``{}``; text that is not a
    JSON object is kept verbatim as ``{"_raw": text}``."""
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {RAW_ARGUMENTS_KEY: arguments}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS_KEY: arguments}


# ----------------------------------------------------------------------------- canonical -> wire


def text_block(part: Text) -> TextBlock:
    block = TextBlock(type="text", text=part.text)
    if part.cache:
        block["cache_control"] = CacheControl(type="ephemeral")
    return block


def image_block(part: Image, param: str) -> ImageBlock:
    return ImageBlock(
        type="image", source=_media_source(part.data, part.media_type, part.url, param)
    )


def document_block(part: Document, param: str) -> DocumentBlock:
    source: Base64Source | UrlSource | PlainTextSource
    if part.text is not None:
        source = PlainTextSource(type="text", media_type="text/plain", data=part.text)
    else:
        media_type = part.media_type or "application/pdf"
        source = _media_source(part.data, media_type, part.url, param)
    block = DocumentBlock(type="document", source=source)
    if part.title is not None:
        block["title"] = part.title
    return block


def _media_source(
    data: str | None, media_type: str | None, url: str | None, param: str
) -> Base64Source | UrlSource:
    if data is None and url is not None and url.startswith("data:"):
        media_type, _, data = url[5:].partition(";base64,")
        if not data:
            raise check.bad(param, "only base64 data: URLs are supported")
    if data is not None:
        if not media_type:
            raise check.bad(param, "inline data needs a media_type for Anthropic")
        return Base64Source(type="base64", media_type=media_type, data=data)
    if url is not None:
        return UrlSource(type="url", url=url)
    raise check.bad(param, "has neither data nor url")


def tool_use_block(part: ToolCall) -> ToolUseBlock:
    return ToolUseBlock(
        type="tool_use", id=part.id, name=part.name, input=tool_input(part.arguments)
    )


def reasoning_block(
    part: Reasoning, *, keep_unsigned: bool
) -> ThinkingBlock | RedactedThinkingBlock | None:
    """Signed reasoning -> ``thinking``; redacted -> ``redacted_thinking``; unsigned reasoning
    is dropped from requests (Anthropic rejects it) and sent with ``signature: ""`` in answers."""
    if part.redacted is not None:
        return RedactedThinkingBlock(type="redacted_thinking", data=part.redacted)
    if part.signature is None and not keep_unsigned:
        return None
    return ThinkingBlock(type="thinking", thinking=part.text, signature=part.signature or "")


def tool_result_block(part: ToolResult, param: str) -> ToolResultBlock:
    block = ToolResultBlock(type="tool_result", tool_use_id=part.call_id)
    content = [_media_block(p, f"{param}.content[{i}]") for i, p in enumerate(part.content)]
    kept = [b for b in content if b is not None]
    if kept:
        block["content"] = kept
    if part.is_error:
        block["is_error"] = True
    return block


def _media_block(part: Text | Image | Document, param: str) -> ResultContent | None:
    if isinstance(part, Text):
        return text_block(part) if part.text else None
    if isinstance(part, Image):
        return image_block(part, param)
    return document_block(part, param)


def request_block(part: Part, param: str) -> Block | None:
    """One part of a request message -> its block, or None when a drop rule applies."""
    match part:
        case Text():
            return text_block(part) if part.text else None
        case Image():
            return image_block(part, param)
        case Document():
            return document_block(part, param)
        case ToolCall():
            return tool_use_block(part)
        case ToolResult():
            return tool_result_block(part, param)
        case Reasoning():
            return reasoning_block(part, keep_unsigned=False)
    raise InvalidRequest(f"{param}: unknown part {type(part).__name__}", param=param)
