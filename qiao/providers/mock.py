"""The ``mock`` provider: an in-process OpenAI-compatible upstream.

Deterministic text, configurable latency and tokens per second, streaming,
tool calls and embeddings, so ``qiao serve --demo`` answers the official SDKs
with no keys and no network. It plugs in at the transport seam, so every
request still goes through the same passthrough and relay code as a real one.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from multidict import CIMultiDict

from ..config import MockSettings
from ..upstream import Deadline, UpstreamRequest

__all__ = ["MockTransport"]

_JSON = CIMultiDict({"Content-Type": "application/json"})
_SSE = CIMultiDict({"Content-Type": "text/event-stream"})


class _MockResponse:
    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes | AsyncIterator[bytes]):
        self.status = status
        self.headers = headers
        self._body = body

    async def read(self) -> bytes:
        assert isinstance(self._body, bytes)
        return self._body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        if isinstance(self._body, bytes):
            yield self._body
            return
        async for chunk in self._body:
            yield chunk

    def close(self) -> None:
        pass


def _words(text: str) -> list[str]:
    return text.split()


def _user_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        for msg in reversed(body.get("messages") or []):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return _text_of(msg.get("content"))
        return ""
    value = body.get("input", body.get("prompt", ""))
    if isinstance(value, list):
        last = value[-1] if value else ""
        return _text_of(last.get("content") if isinstance(last, dict) else last)
    return _text_of(value)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(
        1, len(orjson.dumps(body.get("messages", body.get("input", body.get("prompt", ""))))) // 4
    )


def _tool_call(body: dict[str, Any]) -> tuple[str, str] | None:
    tools = body.get("tools")
    if not tools or body.get("tool_choice") == "none":
        return None
    tool = tools[0]
    fn = tool.get("function", tool) if isinstance(tool, dict) else {}
    params = fn.get("parameters") or {}
    args = {name: "mock" for name in params.get("required", [])}
    return str(fn.get("name", "tool")), orjson.dumps(args).decode()


class MockTransport:
    def __init__(self, settings: MockSettings) -> None:
        self._s = settings
        self._seq = 0

    async def close(self) -> None:
        pass

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-mock{self._seq:08d}"

    def _reply(self, body: dict[str, Any]) -> str:
        if self._s.reply is not None:
            return self._s.reply
        said = " ".join(_words(_user_text(body))[:32])
        return f"Hello from Qiao's mock provider. You said: {said}" if said else "Hello from Qiao."

    async def send(self, request: UpstreamRequest, deadline: Deadline) -> _MockResponse:
        if self._s.latency_ms:
            await asyncio.sleep(self._s.latency_ms / 1000)
        body = orjson.loads(request.body or b"{}")
        path = urlsplit(request.url).path
        stream = body.get("stream") is True
        if path.endswith("/embeddings"):
            return _MockResponse(200, _JSON, self._embeddings(body))
        if path.endswith("/chat/completions"):
            if stream:
                return _MockResponse(200, _SSE, self._chat_stream(body))
            return _MockResponse(200, _JSON, self._chat(body))
        if path.endswith("/completions"):
            if stream:
                return _MockResponse(200, _SSE, self._completion_stream(body))
            return _MockResponse(200, _JSON, self._completion(body))
        if path.endswith("/responses"):
            if stream:
                return _MockResponse(200, _SSE, self._responses_stream(body))
            return _MockResponse(200, _JSON, orjson.dumps(self._response_obj(body, "completed")))
        err = {"error": {"message": f"mock: no route {path}", "type": "invalid_request_error"}}
        return _MockResponse(404, _JSON, orjson.dumps(err))

    # -------------------------------------------------------------- pacing
    async def _paced(self, items: list[str]) -> AsyncIterator[tuple[int, str]]:
        delay = 1 / self._s.tokens_per_second if self._s.tokens_per_second else 0
        for i, item in enumerate(items):
            if delay and i:
                await asyncio.sleep(delay)
            yield i, item

    def _usage(self, body: dict[str, Any], completion: int) -> dict[str, Any]:
        p = _prompt_tokens(body)
        return {"prompt_tokens": p, "completion_tokens": completion, "total_tokens": p + completion}

    # -------------------------------------------------------------- chat
    def _chat(self, body: dict[str, Any]) -> bytes:
        n_value = body.get("n")
        n = n_value if isinstance(n_value, int) else 1
        call = _tool_call(body)
        text = self._reply(body)
        choices = []
        for i in range(max(1, n)):
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": None if call else text,
                "refusal": None,
                "annotations": [],
            }
            if call:
                msg["tool_calls"] = [
                    {
                        "id": f"call_mock{i}",
                        "type": "function",
                        "function": {"name": call[0], "arguments": call[1]},
                    }
                ]
            choices.append(
                {
                    "index": i,
                    "message": msg,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if call else "stop",
                }
            )
        out = {
            "id": self._id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": choices,
            "usage": self._usage(body, len(_words(text)) * max(1, n)),
            "system_fingerprint": "fp_qiao_mock",
        }
        return orjson.dumps(out)

    async def _chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        head = {
            "id": self._id("chatcmpl"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": "fp_qiao_mock",
        }
        usage_on = (body.get("stream_options") or {}).get("include_usage") is True
        extra = {"usage": None} if usage_on else {}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + orjson.dumps({**head, "choices": [choice], **extra}) + b"\n\n"

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        call = _tool_call(body)
        if call:
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_mock0",
                            "type": "function",
                            "function": {"name": call[0], "arguments": ""},
                        }
                    ]
                }
            )
            pieces = [call[1][i : i + 8] for i in range(0, len(call[1]), 8)]
            async for _, piece in self._paced(pieces):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            count = len(pieces)
        else:
            words = _words(self._reply(body))
            async for i, word in self._paced(words):
                yield chunk({"content": word if i == 0 else " " + word})
            count = len(words)
        yield chunk({}, "tool_calls" if call else "stop")
        if usage_on:
            last: dict[str, Any] = {**head, "choices": [], "usage": self._usage(body, count)}
            yield b"data: " + orjson.dumps(last) + b"\n\n"
        yield b"data: [DONE]\n\n"

    # -------------------------------------------------------------- completions
    def _completion(self, body: dict[str, Any]) -> bytes:
        text = self._reply(body)
        out = {
            "id": self._id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": self._usage(body, len(_words(text))),
        }
        return orjson.dumps(out)

    async def _completion_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        head = {
            "id": self._id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        words = _words(self._reply(body))
        async for i, word in self._paced(words):
            last = i == len(words) - 1
            choice = {
                "text": word if i == 0 else " " + word,
                "index": 0,
                "logprobs": None,
                "finish_reason": "stop" if last else None,
            }
            yield b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"
        if (body.get("stream_options") or {}).get("include_usage") is True:
            usage: dict[str, Any] = {**head, "choices": [], "usage": self._usage(body, len(words))}
            yield b"data: " + orjson.dumps(usage) + b"\n\n"
        yield b"data: [DONE]\n\n"

    # -------------------------------------------------------------- embeddings
    def _embeddings(self, body: dict[str, Any]) -> bytes:
        inputs = body.get("input")
        if not isinstance(inputs, list) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dims = body.get("dimensions") or self._s.embedding_dimensions
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vec = _vector(orjson.dumps(item), dims)
            emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(max(1, len(orjson.dumps(x)) // 4) for x in inputs)
        return orjson.dumps(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # -------------------------------------------------------------- responses
    def _response_obj(
        self, body: dict[str, Any], status: str, rid: str | None = None
    ) -> dict[str, Any]:
        text = self._reply(body)
        words = len(_words(text))
        output: list[dict[str, Any]] = []
        call = _tool_call(body)
        if call:
            output.append(
                {
                    "type": "function_call",
                    "id": "fc_mock0",
                    "call_id": "call_mock0",
                    "name": call[0],
                    "arguments": call[1],
                    "status": "completed",
                }
            )
        else:
            output.append(
                {
                    "type": "message",
                    "id": "msg_mock0",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                    ],
                }
            )
        p = _prompt_tokens(body)
        return {
            "id": rid or self._id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model"),
            "output": output if status == "completed" else [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "user": None,
            "metadata": {},
            "usage": {
                "input_tokens": p,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": words,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": p + words,
            }
            if status == "completed"
            else None,
        }

    async def _responses_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        rid = self._id("resp")
        seq = 0

        def ev(kind: str, **fields: Any) -> bytes:
            nonlocal seq
            payload = {"type": kind, "sequence_number": seq, **fields}
            seq += 1
            return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

        start = self._response_obj(body, "in_progress", rid)
        yield ev("response.created", response=start)
        yield ev("response.in_progress", response=start)
        final = self._response_obj(body, "completed", rid)
        item = final["output"][0]
        if item["type"] == "function_call":
            yield ev(
                "response.output_item.added",
                output_index=0,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            args = item["arguments"]
            async for _, piece in self._paced([args[i : i + 8] for i in range(0, len(args), 8)]):
                yield ev(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=0,
                    delta=piece,
                )
            yield ev(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=0,
                arguments=args,
            )
        else:
            text = item["content"][0]["text"]
            yield ev(
                "response.output_item.added",
                output_index=0,
                item={**item, "status": "in_progress", "content": []},
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            common = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            yield ev("response.content_part.added", **common, part=part)
            async for i, word in self._paced(_words(text)):
                yield ev(
                    "response.output_text.delta",
                    **common,
                    delta=word if i == 0 else " " + word,
                    logprobs=[],
                )
            yield ev("response.output_text.done", **common, text=text, logprobs=[])
            yield ev("response.content_part.done", **common, part={**part, "text": text})
        yield ev("response.output_item.done", output_index=0, item=item)
        yield ev("response.completed", response=final)


def _vector(seed: bytes, dims: int) -> list[float]:
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        out.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    return [round(x, 6) for x in out[:dims]]
