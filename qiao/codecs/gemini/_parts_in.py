"""Gemini ``parts`` → canonical parts, for requests (a client's history) and answers alike."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections import deque
from collections.abc import Callable

from ...canonical import Document, Image, Part, Reasoning, Text, ToolCall, ToolResult
from ._common import Node, call_signature_in, json_text, redacted_in, signature_in

# The keys that say what a part is; the others (thought, thoughtSignature, ...) qualify it.
PART_KINDS = frozenset(
    {
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "executableCode",
        "codeExecutionResult",
        "toolCall",
        "toolResponse",
    }
)


# The kinds a model turn may hold that the canonical model carries.
MODEL_KINDS = frozenset({"text", "functionCall", "inlineData", "fileData"})


def kind_of(part: Node) -> str:
    kinds = _kinds(part)
    if len(kinds) != 1:
        raise part.fail("", "must have exactly one of text, inlineData, fileData, ...")
    return kinds[0]


def _kinds(part: Node) -> list[str]:
    kinds = [k for k in part.keys() if k in PART_KINDS]
    if not kinds and part.text("thoughtSignature"):
        return ["text"]  # a bare signature is an empty text part that carries it
    return kinds


def model_part(part: Node, kind: str, new_id: Callable[[], str]) -> list[Part]:
    """A part of a ``model`` turn; ``kind`` is text, functionCall, inlineData or fileData.
    A thought signature on a plain text part rides on an empty ``Reasoning`` just before it."""
    signature = part.text("thoughtSignature")
    if kind == "functionCall":
        return [_call(part, new_id, signature)]
    if kind == "text":
        text = part.text("text") or ""
        if part.flag("thought"):
            return [Reasoning(text, signature_in(signature), redacted_in(signature))]
        out: list[Part] = []
        if signature:
            out.append(Reasoning("", signature_in(signature), redacted_in(signature)))
        if text:
            out.append(Text(text))
        return out
    media = media_part(part, kind)
    return [] if media is None else [media]


def _call(part: Node, new_id: Callable[[], str], signature: str | None) -> ToolCall:
    call = part.obj("functionCall")
    assert call is not None
    name = call.text("name")
    if not name:
        raise call.fail("name", "is required")
    args = call.raw("args")
    if args is not None and not isinstance(args, dict):
        raise call.fail("args", "must be an object")
    return ToolCall(
        call.text("id") or new_id(), name, json_text(args or {}), call_signature_in(signature)
    )


def media_part(part: Node, kind: str) -> Image | Document | None:
    """inlineData / fileData as an image or document; None for audio and video, which the
    canonical model cannot carry."""
    blob = part.obj(kind)
    assert blob is not None
    if kind == "inlineData":
        mime, data = blob.text("mimeType"), blob.text("data")
        if not mime or data is None:
            raise blob.fail("", "needs mimeType and data")
        return _inline(blob, mime, data)
    uri = blob.text("fileUri")
    if not uri:
        raise blob.fail("fileUri", "is required")
    mime = blob.text("mimeType") or mimetypes.guess_type(uri, strict=False)[0]
    if mime and mime.startswith(("audio/", "video/")):
        return None
    if mime and mime.startswith("image/"):
        return Image(media_type=blob.text("mimeType"), url=uri)
    return Document(media_type=blob.text("mimeType"), url=uri)


def _inline(blob: Node, mime: str, data: str) -> Image | Document | None:
    if mime.startswith(("audio/", "video/")):
        return None
    if mime.startswith("image/"):
        return Image(media_type=mime, data=data)
    if mime == "text/plain":
        try:
            return Document(media_type=mime, text=base64.b64decode(data, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            raise blob.fail("data", "must be base64 of UTF-8 text") from None
    return Document(media_type=mime, data=data)


class CallIds:
    """Matches function responses to earlier function calls: by id when the client gave one,
    else to the oldest unanswered call of that name."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[str, deque[str]] = {}

    def called(self, call: ToolCall) -> None:
        self._pending.setdefault(call.name, deque()).append(call.id)

    def answer(self, name: str, call_id: str | None) -> str | None:
        queue = self._pending.get(name)
        if call_id is not None:
            if queue and call_id in queue:
                queue.remove(call_id)
            return call_id
        return queue.popleft() if queue else None


def tool_result(part: Node, ids: CallIds) -> ToolResult:
    """A functionResponse. ``{"result": text}`` / ``{"error": text}`` unwrap to their text (the
    shape encode_request gives a plain result); any other response is its JSON text."""
    resp = part.obj("functionResponse")
    assert resp is not None
    name = resp.text("name")
    if not name:
        raise resp.fail("name", "is required")
    call_id = ids.answer(name, resp.text("id"))
    if call_id is None:
        raise resp.fail("", f"answers no earlier functionCall of {name!r}")
    value = resp.raw("response")
    if value is not None and not isinstance(value, dict):
        raise resp.fail("response", "must be an object")
    text, is_error = _unwrap_result(value or {})
    content: list[Text | Image | Document] = [Text(text)]
    for extra in resp.objs("parts"):
        kind = kind_of(extra)
        media = media_part(extra, kind) if kind in ("inlineData", "fileData") else None
        if media is None:
            raise extra.fail("", "must be inlineData or fileData of an image or document")
        content.append(media)
    return ToolResult(call_id, content, is_error, name)


def _unwrap_result(value: dict[str, object]) -> tuple[str, bool]:
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key in ("result", "error") and isinstance(inner, str):
            return inner, key == "error"
    return json_text(value), False


def answer_parts(content: Node | None, new_id: Callable[[], str]) -> list[Part]:
    """The parts of a candidate's content. Kinds the canonical model cannot carry (audio,
    code execution, server-side tool calls) are dropped; a bare signature is kept."""
    out: list[Part] = []
    for part in content.objs("parts") if content is not None else []:
        kinds = _kinds(part)
        if kinds and kinds[0] in MODEL_KINDS:
            out.extend(model_part(part, kinds[0], new_id))
    return out


class IdMaker:
    """Synthesised ids for function calls without one: ``call_<response id>_<n>``."""

    __slots__ = ("base", "count")

    def __init__(self, base: str) -> None:
        self.base = base
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"call_{self.base}_{self.count - 1}"
