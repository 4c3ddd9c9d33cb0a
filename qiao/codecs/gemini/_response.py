"""Non-streamed answers and errors: canonical ``Response`` ⇄ GenerateContentResponse."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Final, TypedDict

import orjson

from ...canonical import Choice, FinishReason, Message, Part, Request, Response, ToolCall
from ...errors import QiaoError, UpstreamProtocolError
from ._common import FINISH_OUT, GUsage, Node, error_payload, finish_in, usage_in, usage_out
from ._parts_in import IdMaker, answer_parts
from ._parts_out import GContent, answer_part

_RETRY_INFO: Final = "type.googleapis.com/google.rpc.RetryInfo"


class GCandidate(TypedDict, total=False):
    content: GContent
    finishReason: str
    index: int


class GResponse(TypedDict, total=False):
    candidates: list[GCandidate]
    usageMetadata: GUsage
    modelVersion: str
    responseId: str


# ----------------------------------------------------------------------------- client role


def encode_response(resp: Response, request: Request | None = None) -> dict[str, object]:
    """``request`` (the client's own) is not needed: nothing of it shapes the answer."""
    body = GResponse(
        candidates=[candidate(c.index, c.message.parts, c.finish_reason) for c in resp.choices],
        modelVersion=resp.model,
        responseId=resp.id,
    )
    if resp.usage is not None:
        body["usageMetadata"] = usage_out(resp.usage)
    return dict(body)


def candidate(index: int, parts: list[Part], finish: FinishReason | None) -> GCandidate:
    out = [p for p in map(answer_part, parts) if p is not None]
    cand = GCandidate(content=GContent(role="model", parts=out), index=index)
    if finish is not None:
        cand["finishReason"] = FINISH_OUT[finish]
    return cand


def error_body(err: QiaoError) -> tuple[int, dict[str, object]]:
    """``{"error": {"code", "message", "status"}}``; a retry delay rides as RetryInfo."""
    payload = dict(error_payload(err.status, err.message)["error"])
    if err.retry_after is not None:
        delay = {"@type": _RETRY_INFO, "retryDelay": f"{max(0, round(err.retry_after))}s"}
        payload["details"] = [delay]
    return err.status, {"error": payload}


# ----------------------------------------------------------------------------- provider role


def decode_response(body: object) -> Response:
    root = Node(body, "", UpstreamProtocolError)
    rid = root.text("responseId") or new_response_id()
    new_id = IdMaker(rid)
    choices = [_choice(c, i, new_id) for i, c in enumerate(root.objs("candidates"))]
    if not choices:
        feedback = root.obj("promptFeedback")
        if feedback is None or not feedback.text("blockReason"):
            raise UpstreamProtocolError("Gemini answered with no candidates")
        choices = [Choice(0, Message("assistant", []), "content_filter")]
    meta = root.obj("usageMetadata")
    return Response(
        id=rid,
        model=root.text("modelVersion") or "",
        choices=choices,
        usage=usage_in(meta) if meta is not None else None,
        created=created_of(root),
    )


def _choice(cand: Node, position: int, new_id: IdMaker) -> Choice:
    parts = answer_parts(cand.obj("content"), new_id)
    called = any(isinstance(p, ToolCall) for p in parts)
    index = cand.integer("index")
    return Choice(
        index=position if index is None else index,
        message=Message("assistant", parts),
        finish_reason=finish_in(cand.text("finishReason"), called),
    )


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(12)


def created_of(root: Node) -> int:
    stamp = root.text("createTime")
    if stamp:
        try:
            return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    return int(time.time())


def error_message(status: int, body: bytes) -> str | None:
    """The ``error.message`` of a Gemini error body (also inside a streamed JSON array)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and value:
        value = value[0]
    error = value.get("error") if isinstance(value, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else None
