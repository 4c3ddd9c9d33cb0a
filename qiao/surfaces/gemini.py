"""The Gemini surface: ``/v1beta`` and ``/v1`` ``models/{m}:generateContent``,
``:streamGenerateContent?alt=sse``, ``:countTokens``, ``:embedContent``,
``:batchEmbedContents`` and the model list, for google-genai and Gemini CLI. Credentials come
from ``x-goog-api-key``, ``?key=`` or ``Authorization: Bearer``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..auth import Principal
from ..codecs import gemini as codec
from ..errors import InvalidRequest, NotFound, QiaoError
from ..exchange import Exchange, Kind
from ..observability.accesslog import RequestRecord
from .base import Surface
from .tokens import estimate_tokens

__all__ = ["VERSIONS", "GeminiSurface"]

VERSIONS = ("v1beta", "v1", "v1alpha")
_KINDS: dict[str, Kind] = {
    "generateContent": "chat",
    "streamGenerateContent": "chat",
    "countTokens": "count_tokens",
    "embedContent": "embeddings",
    "batchEmbedContents": "embeddings",
}
_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]


def _model_object(model: str) -> dict[str, Any]:
    return {
        "name": f"models/{model}",
        "baseModelId": model,
        "version": "001",
        "displayName": model,
        "supportedGenerationMethods": _METHODS,
    }


class GeminiSurface(Surface):
    protocol = "gemini"

    def routes(self) -> list[web.RouteDef]:
        out = []
        for version in VERSIONS:
            out.append(web.post(f"/{version}/models/{{target}}", self.call))
            if version != "v1":  # GET /v1/models is shared with OpenAI and Anthropic (app.py)
                out.append(web.get(f"/{version}/models", self.list_models))
                out.append(web.get(f"/{version}/models/{{model}}", self.get_model))
        return out

    def error_payload(self, err: QiaoError) -> tuple[int, bytes]:
        status, body = codec.error_body(err)
        return status, orjson.dumps(body)

    async def call(self, request: web.Request) -> web.StreamResponse:
        model, sep, method = request.match_info["target"].rpartition(":")
        kind = _KINDS.get(method)

        def build(raw: bytes, body: dict[str, Any]) -> Exchange:
            if not sep or not model or kind is None:
                raise NotFound(
                    f"Method not found: {method or request.match_info['target']!r}. Expected "
                    f"models/MODEL:{{{','.join(_KINDS)}}}.",
                    code="method_not_found",
                )
            stream = method == "streamGenerateContent"
            if stream and request.query.get("alt") != "sse":
                raise InvalidRequest(
                    "streamGenerateContent is served as server-sent events: add ?alt=sse.",
                    param="alt",
                )
            return Exchange(
                "gemini", kind, raw, body, model, stream, request.headers, request.query, method
            )

        def local(ex: Exchange) -> dict[str, Any] | None:
            if ex.kind != "count_tokens":
                return None
            route = self.engine.router.resolve(ex.model)[0]
            if route.protocol == "gemini":
                return None
            return {"totalTokens": estimate_tokens(ex.body)}

        return await self.run(request, build, answer_locally=local)

    # ----------------------------------------------------------------- models
    async def list_models(self, request: web.Request) -> web.Response:
        def produce(principal: Principal, rec: RequestRecord) -> web.Response:
            aliases = [a for a in self.engine.router.aliases if principal.allows(a)]
            return self.json({"models": [_model_object(a) for a in aliases]}, rec)

        return await self.simple(request, produce)

    async def get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"].removeprefix("models/")

        def produce(principal: Principal, rec: RequestRecord) -> web.Response:
            if not principal.allows(model):
                raise NotFound(f"models/{model} is not found.", code="model_not_found")
            self.engine.router.resolve(model)
            return self.json(_model_object(model), rec)

        return await self.simple(request, produce)
