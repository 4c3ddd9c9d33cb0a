"""The OpenAI surface: /v1/chat/completions, /completions, /embeddings, /responses, /models,
and Azure-style deployment paths.

To an OpenAI-type provider this is a passthrough; to others, chat completions and embeddings
are translated (see :mod:`qiao.plan`).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..auth import Principal
from ..errors import InvalidRequest, NotFound, QiaoError
from ..exchange import Exchange, Kind
from ..observability.accesslog import RequestRecord
from .base import Surface

__all__ = ["OpenAISurface", "error_body"]

_CREATED = 1_700_000_000


def error_body(err: QiaoError) -> bytes:
    payload = {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    return orjson.dumps({"error": payload})


def _validate(kind: Kind, body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
        if not all(isinstance(m, dict) for m in messages):
            raise InvalidRequest("Each message must be an object.", param="messages")
    elif kind == "completions" and "prompt" not in body:
        raise InvalidRequest("'prompt' is required.", param="prompt")
    elif kind == "embeddings":
        if not isinstance(body.get("input"), str | list):
            raise InvalidRequest("'input' must be a string or an array.", param="input")
        if stream:
            raise InvalidRequest("Embeddings cannot be streamed.", param="stream")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise InvalidRequest("'n' must be an integer between 1 and 128.", param="n")
    return model


def model_object(model: str, provider: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _CREATED, "owned_by": provider}


class OpenAISurface(Surface):
    protocol = "openai"

    def routes(self, prefix: str = "/v1") -> list[web.RouteDef]:
        return [
            web.post(f"{prefix}/chat/completions", self.chat_completions),
            web.post(f"{prefix}/completions", self.completions),
            web.post(f"{prefix}/embeddings", self.embeddings),
            web.post(f"{prefix}/responses", self.responses),
        ]

    def azure_routes(self) -> list[web.RouteDef]:
        """Azure OpenAI classic paths, so ``AzureOpenAI`` clients can point at Qiao."""
        base = "/openai/deployments/{deployment}"
        return [
            web.post(f"{base}/chat/completions", self.chat_completions),
            web.post(f"{base}/completions", self.completions),
            web.post(f"{base}/embeddings", self.embeddings),
        ]

    def error_payload(self, err: QiaoError) -> tuple[int, bytes]:
        return err.status, error_body(err)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "completions")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "embeddings")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "responses")

    async def _forward(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        deployment = request.match_info.get("deployment")

        def build(raw: bytes, body: dict[str, Any]) -> Exchange:
            if deployment is not None and body.get("model") != deployment:
                body = {**body, "model": deployment}  # Azure: the path names the model
                raw = orjson.dumps(body)
            model = _validate(kind, body)
            return Exchange(
                "openai", kind, raw, body, model, body.get("stream") is True, request.headers
            )

        return await self.run(request, build)

    # ----------------------------------------------------------------- models
    async def list_models(self, request: web.Request) -> web.Response:
        def produce(principal: Principal, rec: RequestRecord) -> web.Response:
            router = self.engine.router
            data = [
                model_object(alias, router.resolve(alias)[0].upstream.name)
                for alias in router.aliases
                if principal.allows(alias)
            ]
            return self.json({"object": "list", "data": data}, rec)

        return await self.simple(request, produce)

    async def get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]

        def produce(principal: Principal, rec: RequestRecord) -> web.Response:
            if not principal.allows(model):
                raise NotFound(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    param="model",
                    code="model_not_found",
                )
            route = self.engine.router.resolve(model)[0]
            return self.json(model_object(model, route.upstream.name), rec, route.upstream.name)

        return await self.simple(request, produce)
