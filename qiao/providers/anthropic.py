"""Anthropic's Messages API as an upstream: URL, headers, passthrough body (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .openai import ROUTING_FIELDS, USER_AGENT, ProviderInfo

__all__ = ["DEFAULT_VERSION", "messages_url", "passthrough_body", "upstream_headers"]

# Claude Code and most clients send this; under 2026-10-21 sampling parameters are refused,
# so translated requests (which may carry temperature) use the older version.
DEFAULT_VERSION = "2023-06-01"


def messages_url(info: ProviderInfo, *, count_tokens: bool = False, beta: bool = False) -> str:
    path = "/v1/messages/count_tokens" if count_tokens else "/v1/messages"
    return f"{info.base_url}{path}{'?beta=true' if beta else ''}"


def upstream_headers(info: ProviderInfo, client: Mapping[str, str] | None) -> dict[str, str]:
    """``client`` is the caller's headers when the caller speaks Anthropic too."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "anthropic-version": DEFAULT_VERSION,
    }
    if client is not None:
        for name in ("anthropic-version", "anthropic-beta"):
            value = client.get(name)
            if value:
                headers[name] = value
    headers.update(info.config.headers)
    key = info.config.api_key.get_secret_value() if info.config.api_key else ""
    if key:
        headers["x-api-key"] = key
    return headers


def passthrough_body(raw: bytes, body: dict[str, Any], model: str) -> bytes:
    if body.get("model") == model and ROUTING_FIELDS.isdisjoint(body):
        return raw
    out = {k: v for k, v in body.items() if k not in ROUTING_FIELDS}
    out["model"] = model
    return orjson.dumps(out)
