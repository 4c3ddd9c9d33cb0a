"""The OpenAI wire protocol as an upstream: OpenAI itself, Azure and every preset.

Pure functions: they build the upstream call from the caller's JSON and never
touch a socket. Passthrough means the caller's bytes go upstream unchanged
unless something must change (the model name, ``stream_options``, fields that
try to steer routing), in which case the parsed JSON is re-serialised with
every other field kept as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from ..config import ProviderConfig
from ..errors import InvalidRequest
from ..modelname import segment
from .presets import PRESETS, Preset
from .reasoning import ReasoningMemory

__all__ = ["USER_AGENT", "Op", "ProviderInfo", "prepare_body", "upstream_headers", "upstream_url"]

USER_AGENT = "qiao/0.1"


class Op(StrEnum):
    """An OpenAI operation, valued by its path below the base URL."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RESPONSES = "responses"


# Fields a caller may send to steer a gateway elsewhere: never honoured, never forwarded.
# Qiao is often chained to relays built on one-api/new-api/LiteLLM, which may honour some of
# them (a caller-chosen endpoint, proxy, headers or credentials). Listed in the README.
ROUTING_FIELDS = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "extra_headers",
        "headers",
        "custom_llm_provider",
        "litellm_params",
        "litellm_metadata",
        "user_config",
        "model_list",
        "azure_endpoint",
        "azure_ad_token",
        "endpoint",
        "url",
        "proxy",
        "proxies",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region_name",
    }
)
# Client request headers worth passing on; everything else (credentials, hop-by-hop,
# cookies, forwarding headers) stays here.
FORWARDED_HEADERS = ("openai-beta", "idempotency-key")

_STREAM_USAGE_OPS = (Op.CHAT, Op.COMPLETIONS)


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What the adapter needs to know about one configured provider."""

    name: str
    config: ProviderConfig
    preset: Preset | None
    base_url: str
    auth_headers: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, name: str, config: ProviderConfig) -> ProviderInfo:
        key = config.api_key.get_secret_value() if config.api_key else ""
        if config.type == "azure":
            auth: tuple[tuple[str, str], ...] = (("api-key", key),)
        elif key:
            auth = (("Authorization", f"Bearer {key}"),)
        else:
            auth = ()
        return cls(name, config, PRESETS.get(config.type), config.resolved_base_url, auth)

    @property
    def stream_usage(self) -> bool:
        return self.preset.stream_usage if self.preset else True


def upstream_url(info: ProviderInfo, op: Op, model: str) -> str:
    if info.config.type == "azure":
        version = info.config.api_version
        if op is Op.RESPONSES:
            return f"{info.base_url}/openai/responses?api-version={version}"
        deployment = segment(model)
        return f"{info.base_url}/openai/deployments/{deployment}/{op.value}?api-version={version}"
    return f"{info.base_url}/{op.value}"


def upstream_headers(info: ProviderInfo, client_headers: Any) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    for name in FORWARDED_HEADERS:
        value = client_headers.get(name)
        if value is not None:
            headers[name] = value
    headers.update(info.config.headers)
    headers.update(info.auth_headers)
    return headers


def prepare_body(
    info: ProviderInfo,
    op: Op,
    raw: bytes,
    body: dict[str, Any],
    model: str,
    reasoning: ReasoningMemory | None = None,
) -> tuple[bytes, bool]:
    """The bytes to send upstream, and whether the caller asked for stream usage.

    Qiao always asks a streaming upstream for usage (to account for it); the
    relay removes the extra chunk when the caller did not ask.
    """
    changed = False
    out = body
    if body.get("model") != model:
        out = {**body, "model": model}
        changed = True
    if not ROUTING_FIELDS.isdisjoint(body):
        out = {k: v for k, v in out.items() if k not in ROUTING_FIELDS}
        changed = True
    _check_limits(info, out)
    if reasoning is not None and op is Op.CHAT:
        filled = reasoning.fill(out)
        if filled is not None:
            out = filled
            changed = True
    client_usage = True
    if out.get("stream") is True and op in _STREAM_USAGE_OPS:
        opts = out.get("stream_options")
        client_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        if not client_usage and info.stream_usage:
            out = {**out, "stream_options": {**(opts or {}), "include_usage": True}}
            changed = True
    return (orjson.dumps(out) if changed else raw), client_usage


def _check_limits(info: ProviderInfo, body: dict[str, Any]) -> None:
    preset = info.preset
    if preset is None or preset.max_n is None:
        return
    n = body.get("n")
    if isinstance(n, int) and n > preset.max_n:
        raise InvalidRequest(
            f"provider {info.name!r} accepts n <= {preset.max_n}, got {n}", param="n"
        )
