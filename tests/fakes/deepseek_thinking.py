"""A fake DeepSeek upstream in thinking mode (protocols.md §6).

Answers a user turn with ``reasoning_content`` and a tool call; answers a tool
turn with text; and, like the real API, rejects a history whose assistant
tool-call turns lack their ``reasoning_content`` (400).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import orjson
from aiohttp import web

MISSING = "The reasoning_content in the thinking mode must be passed back to the API."


class FakeDeepSeek:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.port = 0
        self.bodies: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        self.bodies.append(body)
        for m in body["messages"]:
            if m["role"] == "assistant" and m.get("tool_calls") and not m.get("reasoning_content"):
                err = {
                    "message": MISSING,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_request_error",
                }
                return web.json_response({"error": err}, status=400)
        n = next(self._ids)
        last = body["messages"][-1]
        if last["role"] == "tool":
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": "It is sunny.",
                "reasoning_content": "The tool said sunny.",
            }
            finish = "stop"
        else:
            call = {
                "id": f"call_ds_{n}",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
            msg = {
                "role": "assistant",
                "content": "",
                "reasoning_content": f"Thought {n}: use the tool.",
                "tool_calls": [call],
            }
            finish = "tool_calls"
        head = {"id": f"ds-{n}", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return web.json_response(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], fin: str | None = None) -> None:
            chunk = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": fin, "logprobs": None}],
            }
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        await send({"role": "assistant", "content": ""})
        reasoning = msg["reasoning_content"]
        await send({"reasoning_content": reasoning[:7]})
        await send({"reasoning_content": reasoning[7:]})
        if msg.get("tool_calls"):
            tc = msg["tool_calls"][0]
            await send({"tool_calls": [{"index": 0, **tc}]})
        else:
            await send({"content": msg["content"]})
        await send({}, finish)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    def start(self) -> FakeDeepSeek:
        ready = threading.Event()

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(main(), self._loop)
        ready.wait(5)
        return self

    def stop(self) -> None:
        if self._loop and self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
