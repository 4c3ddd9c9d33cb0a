"""Canonical parts → Gemini ``parts``, for requests to Gemini and answers to Gemini clients."""

from __future__ import annotations

import base64
import mimetypes
import re
from typing import TypedDict

from ...canonical import Document, Image, Part, Reasoning, Text, ToolCall
from ...errors import InvalidRequest
from ._common import args_object, signature_out

# The first base64 characters of the image formats a client may send without a media type.
_MAGIC = (("iVBORw0KGgo", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"))
_MAGIC_WEBP = re.compile(r"UklGR[A-Za-z0-9+/]{6}XRUJQ")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)?(?:;[\w=.-]+)*;base64,(.*)", re.DOTALL)


class GBlob(TypedDict):
    mimeType: str
    data: str


class GFileData(TypedDict, total=False):
    mimeType: str
    fileUri: str


class GFunctionCall(TypedDict, total=False):
    id: str
    name: str
    args: dict[str, object]


class GFunctionResponse(TypedDict, total=False):
    id: str
    name: str
    response: dict[str, object]


class GPart(TypedDict, total=False):
    text: str
    thought: bool
    thoughtSignature: str
    inlineData: GBlob
    fileData: GFileData
    functionCall: GFunctionCall
    functionResponse: GFunctionResponse


class GContent(TypedDict, total=False):
    role: str
    parts: list[GPart]


def call_part(call: ToolCall, signature: str | None) -> GPart:
    fc = GFunctionCall(name=call.name, args=args_object(call.arguments))
    if call.id:
        fc["id"] = call.id
    part = GPart(functionCall=fc)
    if signature:
        part["thoughtSignature"] = signature
    return part


def media_out(item: Image | Document) -> GPart:
    """An image or document as inlineData (base64) or fileData (a URL: Gemini fetches only
    Files-API, gs:// and some https URIs; inlining the bytes is the caller's choice)."""
    if isinstance(item, Document) and item.text is not None and item.data is None:
        data = base64.b64encode(item.text.encode()).decode()
        return GPart(inlineData=GBlob(mimeType=item.media_type or "text/plain", data=data))
    data_url = _DATA_URL.fullmatch(item.url) if item.url else None
    if data_url is not None:
        return _inline(item, data_url.group(1) or item.media_type, data_url.group(2))
    if item.data is not None:
        return _inline(item, item.media_type, item.data)
    if item.url:
        file = GFileData(fileUri=item.url)
        mime = item.media_type or mimetypes.guess_type(item.url, strict=False)[0]
        if mime:
            file["mimeType"] = mime
        return GPart(fileData=file)
    raise InvalidRequest(f"{type(item).__name__.lower()} has neither data nor url")


def _inline(item: Image | Document, mime: str | None, data: str) -> GPart:
    mime = mime or _sniff(data)
    if mime is None:
        raise InvalidRequest("inline data needs a media type (Gemini requires mimeType)")
    return GPart(inlineData=GBlob(mimeType=mime, data=data))


def _sniff(data: str) -> str | None:
    for prefix, mime in _MAGIC:
        if data.startswith(prefix):
            return mime
    if _MAGIC_WEBP.match(data):
        return "image/webp"
    if data.startswith("JVBERi0"):
        return "application/pdf"
    return None


def answer_part(part: Part) -> GPart | None:
    """A part of an answer to a Gemini client; reasoning is a thought part whose signature
    travels as thoughtSignature (see ``signature_out``). Tool results cannot appear."""
    if isinstance(part, Text):
        return GPart(text=part.text)
    if isinstance(part, Reasoning):
        out = GPart(text=part.text, thought=True)
        sig = signature_out(part.signature, part.redacted)
        if sig is not None:
            out["thoughtSignature"] = sig
        return out
    if isinstance(part, ToolCall):
        return call_part(part, part.signature)
    if isinstance(part, Image | Document):
        return media_out(part)
    return None
