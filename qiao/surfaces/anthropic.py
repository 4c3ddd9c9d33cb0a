"""The Anthropic surface: /v1/messages (stream and not, ``?beta=true`` accepted),
/v1/messages/count_tokens and the Anthropic-shaped model list, for the anthropic SDK and
Claude Code. Credentials come from ``x-api-key`` or ``Authorization: Bearer`` alike."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..auth import Principal
from ..codecs import anthropic as codec
from ..errors import InvalidRequest, NotFound, QiaoError
from ..exchange import Exchange, Kind
from ..observability.accesslog import RequestRecord
from .base import Surface
from .tokens import estimate_tokens

__all__ = ["AnthropicSurface"]

_CREATED_AT = "2025-01-01T00:00:00Z"


def _validate(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: Field required", param="model")
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: Field required", param="messages")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream: Input should be a valid boolean", param="stream")
    return model


def _model_object(model: str) -> dict[str, Any]:
    """A ``ModelInfo`` with every field the SDK's type has: ``lifecycle`` is required since
    anthropic 2.14; what Qiao cannot know of an alias (limits, capabilities, the model line,
    retirement dates) is null, as the API writes unknown values."""
    return {
        "type": "model",
        "id": model,
        "display_name": model,
        "created_at": _CREATED_AT,
        "lifecycle": "active",
        "capabilities": None,
        "deprecated_at": None,
        "line": None,
        "max_input_tokens": None,
        "max_tokens": None,
        "retires_at": None,
    }


class AnthropicSurface(Surface):
    protocol = "anthropic"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.messages),
            web.post("/v1/messages/count_tokens", self.count_tokens),
        ]

    def error_payload(self, err: QiaoError) -> tuple[int, bytes]:
        status, body = codec.error_body(err)
        return status, orjson.dumps(body)

    def _builder(self, request: web.Request, kind: Kind) -> Any:
        def build(raw: bytes, body: dict[str, Any]) -> Exchange:
            model = _validate(body)
            stream = body.get("stream") is True and kind == "chat"
            return Exchange(
                "anthropic", kind, raw, body, model, stream, request.headers, request.query
            )

        return build

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self.run(request, self._builder(request, "chat"))

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        build = self._builder(request, "count_tokens")

        def local(ex: Exchange) -> dict[str, Any] | None:
            route = self.engine.router.resolve(ex.model)[0]
            if route.protocol == "anthropic" and route.upstream.info.config.type == "anthropic":
                return None  # ask the upstream (Bedrock and Vertex have no such endpoint)
            return {"input_tokens": estimate_tokens(ex.body)}

        return await self.run(request, build, answer_locally=local)

    # ----------------------------------------------------------------- models
    async def list_models(self, request: web.Request) -> web.Response:
        def produce(principal: Principal, rec: RequestRecord) -> web.Response:
            ids = [a for a in self.engine.router.aliases if principal.allows(a)]
            data = [_model_object(a) for a in ids]
            body = {
                "data": data,
                "has_more": False,
                "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None,
            }
            return self.json(body, rec)

        return await self.simple(request, produce)

    async def get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]

        def produce(principal: Principal, rec: RequestRecord) -> web.Response:
            if not principal.allows(model):
                raise NotFound(f"model: {model}", param="model", code="model_not_found")
            self.engine.router.resolve(model)
            return self.json(_model_object(model), rec)

        return await self.simple(request, produce)
