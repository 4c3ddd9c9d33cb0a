"""Google's Gemini API (AI Studio) as an upstream: URL, headers, passthrough body (pure)."""

from __future__ import annotations

from typing import Any

import orjson

from ..modelname import segment, segments
from .openai import ROUTING_FIELDS, USER_AGENT, ProviderInfo

__all__ = ["method_url", "passthrough_body", "upstream_headers"]

API_VERSION = "v1beta"


def method_url(info: ProviderInfo, model: str, method: str, *, stream: bool = False) -> str:
    """``model`` and ``method`` are percent-encoded path segments (``:`` refused in both)."""
    if model.startswith(("models/", "tunedModels/")):
        name = segments(model, colon=False)
    else:
        name = "models/" + segment(model, colon=False)
    suffix = "?alt=sse" if stream else ""
    return f"{info.base_url}/{API_VERSION}/{name}:{segment(method, colon=False)}{suffix}"


def upstream_headers(info: ProviderInfo) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    headers.update(info.config.headers)
    key = info.config.api_key.get_secret_value() if info.config.api_key else ""
    if key:
        headers["x-goog-api-key"] = key
    return headers


def passthrough_body(raw: bytes, body: dict[str, Any], model: str) -> bytes:
    """Gemini names the model in the URL; only batch embedding bodies repeat it. Fields that
    try to steer a gateway (:data:`ROUTING_FIELDS`) are stripped as for the other protocols."""
    if not ROUTING_FIELDS.isdisjoint(body):
        body = {k: v for k, v in body.items() if k not in ROUTING_FIELDS}
        raw = orjson.dumps(body)
    requests = body.get("requests")
    if not isinstance(requests, list):
        return raw
    name = model if model.startswith("models/") else f"models/{model}"
    if all(isinstance(r, dict) and r.get("model") == name for r in requests):
        return raw
    fixed = [{**r, "model": name} if isinstance(r, dict) else r for r in requests]
    return orjson.dumps({**body, "requests": fixed})
