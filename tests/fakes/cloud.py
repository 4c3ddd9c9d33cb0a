"""Fake AWS Bedrock and Google Vertex AI endpoints (plus an OAuth token endpoint) on loopback.

Bedrock checks the SigV4 signature the way AWS does (recomputed over the received request);
Vertex checks the OAuth Bearer token its fake token endpoint issued for a JWT assertion that
verifies with the service account's public key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from datetime import datetime
from typing import Any

from aiohttp import web

from fakes import jwt_check
from qiao.providers.bedrock import encode_frame, sigv4_headers

ANTHROPIC_MESSAGE = {
    "id": "msg_cloud1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "text", "text": "hello from the cloud"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 4},
}
ANTHROPIC_EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            **ANTHROPIC_MESSAGE,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "hello from"},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": " the cloud"},
    },
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 4},
    },
    {"type": "message_stop"},
]
GEMINI_RESPONSE = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "hello from vertex"}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 3, "totalTokenCount": 6},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "vx1",
}


class Loopback:
    """An aiohttp app on 127.0.0.1 (or another loopback ``host``) in a background thread."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = 0
        self.seen: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Loopback:
        async def start() -> None:
            self._runner = web.AppRunner(self.app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)


def fake_bedrock(access_key: str, secret_key: str, region: str) -> Loopback:
    server: Loopback

    async def invoke(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        auth = request.headers.get("Authorization", "")
        signed = (
            auth.split("SignedHeaders=")[1].split(",")[0].split(";")
            if "SignedHeaders=" in auth
            else []
        )
        expected = sigv4_headers(
            request.method,
            f"http://{request.host}{request.raw_path}",
            {name: request.headers[name] for name in signed if name in request.headers},
            body,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            now=datetime.strptime(
                request.headers.get("X-Amz-Date", "19700101T000000Z"), "%Y%m%dT%H%M%S%z"
            ),
        )
        if not auth or expected["Authorization"] != auth:
            return web.json_response(
                {"message": "The request signature we calculated does not match"}, status=403
            )
        server.seen.append({"path": request.raw_path, "body": json.loads(body)})
        if not request.path.endswith("invoke-with-response-stream"):
            return web.json_response(ANTHROPIC_MESSAGE)
        resp = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        for event in ANTHROPIC_EVENTS:
            payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
            frame = encode_frame(
                {
                    ":event-type": "chunk",
                    ":message-type": "event",
                    ":content-type": "application/json",
                },
                payload.encode(),
            )
            for i in range(0, len(frame), 29):
                await resp.write(frame[i : i + 29])
        return resp

    app = web.Application()
    app.router.add_post("/model/{model}/{op}", invoke)
    server = Loopback(app)
    return server


def fake_vertex(public_key_pem: bytes) -> Loopback:
    server: Loopback
    issued: set[str] = set()

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        claims = jwt_check.verify_rs256(str(form["assertion"]), public_key_pem)
        server.seen.append({"token_request": claims})
        value = f"ya29.fake-{len(issued)}"
        issued.add(value)
        return web.json_response(
            {"access_token": value, "expires_in": 3600, "token_type": "Bearer"}
        )

    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in issued

    async def predict(request: web.Request) -> web.StreamResponse:
        if not authorized(request):
            return web.json_response(
                {"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}},
                status=401,
            )
        body = await request.json()
        target = request.match_info["target"]
        server.seen.append({"path": request.path, "body": body})
        if target.endswith(":rawPredict"):
            return web.json_response(ANTHROPIC_MESSAGE)
        if target.endswith(":generateContent"):
            return web.json_response(GEMINI_RESPONSE)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if target.endswith(":streamRawPredict"):
            for event in ANTHROPIC_EVENTS:
                await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        else:
            await resp.write(b"data: " + json.dumps(GEMINI_RESPONSE).encode() + b"\r\n\r\n")
        return resp

    app = web.Application()
    app.router.add_post("/token", token)
    app.router.add_post(
        "/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{target}", predict
    )
    server = Loopback(app)
    return server
