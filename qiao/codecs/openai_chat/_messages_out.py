"""Canonical system prompt and messages → upstream chat.completions ``messages``."""

from __future__ import annotations

from typing import NotRequired, TypedDict

from ...canonical import (
    Document,
    Image,
    Message,
    Reasoning,
    Request,
    Text,
    ToolCall,
    ToolResult,
)
from ...errors import InvalidRequest
from ._common import WireToolCall, data_url, tool_call_out

__all__ = ["ContentPart", "WireMessage", "encode_messages"]

_JOIN = "\n\n"  # between text parts of one input message sent as a single string
_FILE_SUFFIX = {"application/pdf": ".pdf", "text/plain": ".txt"}
_ERROR_PREFIX = "Error: "  # OpenAI has no is_error flag: the model is told in the text


class _ImageURL(TypedDict):
    url: str
    detail: NotRequired[str]


class _File(TypedDict):
    file_data: str
    filename: str


class _TextPart(TypedDict):
    type: str
    text: str


class _ImagePart(TypedDict):
    type: str
    image_url: _ImageURL


class _FilePart(TypedDict):
    type: str
    file: _File


ContentPart = _TextPart | _ImagePart | _FilePart


class WireMessage(TypedDict, total=False):
    role: str
    content: str | list[ContentPart] | None
    name: str
    tool_calls: list[WireToolCall]
    tool_call_id: str
    reasoning_content: str


def encode_messages(req: Request, *, reasoning: bool) -> list[WireMessage]:
    out: list[WireMessage] = []
    if req.system:
        out.append({"role": "system", "content": _JOIN.join(t.text for t in req.system)})
    attachments: list[ContentPart] = []  # from tool results, for the next user message
    for i, msg in enumerate(req.messages):
        results = [p for p in msg.parts if isinstance(p, ToolResult)]
        out.extend(_tool_result(r, attachments) for r in results)
        if msg.role == "tool":
            continue
        if attachments:
            out.append({"role": "user", "content": attachments})
            attachments = []
        if msg.role == "assistant":
            out.append(_assistant(msg, reasoning))
        elif msg.role == "system":
            out.append({"role": "system", "content": _JOIN.join(_texts(msg, i))})
        elif not results or len(results) < len(msg.parts):
            out.append(_user(msg, i))
    if attachments:
        out.append({"role": "user", "content": attachments})
    return out


def _texts(msg: Message, i: int) -> list[str]:
    if not all(isinstance(p, Text) for p in msg.parts):
        raise InvalidRequest("A system message may only hold text.", param=f"messages[{i}].content")
    return [p.text for p in msg.parts if isinstance(p, Text)]


def _user(msg: Message, i: int) -> WireMessage:
    leaves = [p for p in msg.parts if isinstance(p, Text | Image | Document)]
    out: WireMessage = {"role": "user"}
    if all(isinstance(p, Text) for p in leaves):
        out["content"] = _JOIN.join(p.text for p in leaves if isinstance(p, Text))
    else:
        out["content"] = [_leaf(p, f"messages[{i}].content[{j}]") for j, p in enumerate(leaves)]
    if msg.name:
        out["name"] = msg.name
    return out


def _assistant(msg: Message, reasoning: bool) -> WireMessage:
    """Text joined as streamed (no separator); images or files in an assistant turn are
    dropped: chat.completions has no place for them."""
    texts = [p.text for p in msg.parts if isinstance(p, Text)]
    calls = [tool_call_out(p) for p in msg.parts if isinstance(p, ToolCall)]
    out: WireMessage = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        out["tool_calls"] = calls
    thought = "".join(p.text for p in msg.parts if isinstance(p, Reasoning))
    if reasoning and thought:
        out["reasoning_content"] = thought
    if msg.name:
        out["name"] = msg.name
    return out


def _tool_result(result: ToolResult, attachments: list[ContentPart]) -> WireMessage:
    """Tool messages take only text: images and files go to the next user message, and the
    tool message says so."""
    texts: list[str] = []
    extra: list[Text | Image | Document] = []
    for part in result.content:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, Document) and part.text is not None:
            texts.append(part.text)
        else:
            extra.append(part)
    if extra:
        param = f"tool result {result.call_id}"
        attachments.append({"type": "text", "text": f"Attachments of tool call {result.call_id}:"})
        attachments.extend(_leaf(p, param) for p in extra)
        texts.append(f"[{len(extra)} attachment(s) follow in the next user message]")
    content = _JOIN.join(texts)
    if result.is_error and not content.startswith(_ERROR_PREFIX):
        content = _ERROR_PREFIX + content
    return {"role": "tool", "tool_call_id": result.call_id, "content": content}


def _leaf(part: Text | Image | Document, param: str) -> ContentPart:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        return {"type": "image_url", "image_url": _image_url(part, param)}
    if part.text is not None:
        return {"type": "text", "text": part.text}
    if part.data is None or part.media_type is None:
        raise InvalidRequest(
            "This model's provider takes files only inline (base64 with a media type), not by URL.",
            param=param,
        )
    name = part.title or "document" + _FILE_SUFFIX.get(part.media_type, "")
    return {
        "type": "file",
        "file": {"file_data": data_url(part.media_type, part.data), "filename": name},
    }


def _image_url(image: Image, param: str) -> _ImageURL:
    if image.data is not None and image.media_type:
        out: _ImageURL = {"url": data_url(image.media_type, image.data)}
    elif image.url is not None:
        out = {"url": image.url}
    else:
        raise InvalidRequest("An image needs a URL or base64 data with a media type.", param=param)
    if image.detail is not None:
        out["detail"] = image.detail
    return out
