"""Canonical :class:`Response` ⇄ Anthropic message JSON (non-streaming answers)."""

from __future__ import annotations

import uuid
from typing import Any, cast

from ...canonical import Choice, Message, Part, Reasoning, Request, Response, Text, ToolCall
from . import _check as check
from ._maps import STOP_REASON_IN, stop_reason_out, usage_in, usage_out
from ._wire import Block, MessageBody
from .blocks import ASSISTANT, decode_block, reasoning_block, text_block, tool_use_block

ID_PREFIX = "msg_"


def message_id(canonical_id: str) -> str:
    """Anthropic ids start with ``msg_``: keep one that does, prefix one that does not."""
    if not canonical_id:
        return ID_PREFIX + uuid.uuid4().hex
    return canonical_id if canonical_id.startswith(ID_PREFIX) else ID_PREFIX + canonical_id


def encode_response(resp: Response, request: Request | None = None) -> dict[str, Any]:
    """Only choice 0 is sent (Anthropic has no ``n``); ``request`` is not needed."""
    choice = next((c for c in resp.choices if c.index == 0), None)
    parts = choice.message.parts if choice is not None else []
    reason = choice.finish_reason if choice is not None else "stop"
    stop_sequence = choice.stop_sequence if choice is not None else None
    body = MessageBody(
        id=message_id(resp.id),
        type="message",
        role="assistant",
        model=resp.model,
        content=[b for b in map(_answer_block, parts) if b is not None],
        stop_reason=stop_reason_out(reason, stop_sequence),
        stop_sequence=stop_sequence if reason == "stop" else None,
        usage=usage_out(resp.usage),
    )
    return cast(dict[str, Any], body)


def _answer_block(part: Part) -> Block | None:
    """Text, reasoning and tool calls; anything else cannot be an Anthropic answer."""
    if isinstance(part, Text):
        return text_block(Text(part.text)) if part.text else None
    if isinstance(part, Reasoning):
        return reasoning_block(part, keep_unsigned=True)
    if isinstance(part, ToolCall):
        return tool_use_block(part)
    return None


def decode_response(body: dict[str, Any]) -> Response:
    """Content blocks this codec does not know (server tool blocks...) are skipped."""
    with check.upstream("message"):
        msg = check.obj(body, "message")
        content = check.array(check.required(msg, "content", "content"), "content")
        parts = [
            decode_block(b, f"content[{i}]", ASSISTANT)
            for i, b in enumerate(content)
            if isinstance(b, dict) and b.get("type") in ASSISTANT
        ]
        reason = check.optional(msg, "stop_reason", "stop_reason", check.string)
        stop_sequence = check.optional(msg, "stop_sequence", "stop_sequence", check.string)
        usage = check.optional(msg, "usage", "usage", check.obj)
        choice = Choice(
            index=0,
            message=Message("assistant", parts),
            finish_reason=None if reason is None else STOP_REASON_IN.get(reason, "stop"),
            stop_sequence=stop_sequence,
        )
        return Response(
            id=check.string(check.required(msg, "id", "id"), "id"),
            model=check.string(check.required(msg, "model", "model"), "model"),
            choices=[choice],
            usage=None if usage is None else usage_in(usage, "usage"),
        )
