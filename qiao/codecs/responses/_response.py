"""Whole answers and errors: canonical → the Responses API ``response`` object."""

from __future__ import annotations

from typing import Any

from ...canonical import Reasoning, Request, Response, Text, ToolCall
from ...errors import QiaoError
from ._common import (
    CALL_SIGNATURE,
    item_id,
    now,
    reasoning_item,
    response_id,
    response_object,
    status_of,
)

__all__ = ["call_item", "encode_response", "error_body", "message_item", "signature_item"]


def message_item(mid: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": mid,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def call_item(
    fid: str, call: ToolCall, status: str, namespaces: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """A ``function_call`` item; a call of a function the client declared in a namespace is
    named as declared (``namespace`` + ``name``), not by the flat name the provider saw."""
    item = {
        "type": "function_call",
        "id": fid,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }
    origin = namespaces.get(call.name) if namespaces else None
    if origin is not None:
        item["namespace"], item["name"] = origin
    return item


def signature_item(signature: str) -> dict[str, Any]:
    """The reasoning item that carries a function call's thought signature (Gemini)."""
    return reasoning_item(item_id("rs"), "", CALL_SIGNATURE + signature, None)


def encode_response(resp: Response, request: Request | None = None) -> dict[str, Any]:
    """A canonical answer as a ``response`` object (protocols.md §2.8). Only the first choice
    is kept (the Responses API has no ``n``). ``request``, the client's own, names namespaced
    calls back and gives the echoed settings."""
    namespaces = request.tool_namespaces if request is not None else None
    choice = resp.choices[0] if resp.choices else None
    output: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            output.append(message_item(item_id("msg"), "".join(texts), "completed"))
            texts.clear()

    for part in choice.message.parts if choice is not None else []:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, Reasoning):
            flush()
            if part.text or part.signature is not None or part.redacted is not None:
                item = reasoning_item(item_id("rs"), part.text, part.signature, part.redacted)
                output.append(item)
        elif isinstance(part, ToolCall):
            flush()
            if part.signature:
                output.append(signature_item(part.signature))
            output.append(call_item(item_id("fc"), part, "completed", namespaces))
        # images and documents in an answer have no output item here: dropped
    flush()
    status, incomplete, error = status_of(choice.finish_reason if choice is not None else None)
    return response_object(
        rid=response_id(resp.id),
        created=resp.created or now(),
        model=resp.model,
        status=status,
        output=output,
        usage=resp.usage,
        incomplete=incomplete,
        error=error,
        request=request,
    )


def error_body(err: QiaoError) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI-shaped body of an error (protocols.md §2.10)."""
    payload = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    return err.status, {"error": payload}
