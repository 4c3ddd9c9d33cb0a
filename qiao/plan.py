"""How one exchange goes to one target: the upstream call, and whether it is translated.

Same protocol in and out is a passthrough: the caller's bytes go up with only what must change
changed. Different protocols go through the canonical model: the client's codec decodes, the
provider's codec encodes. Adding a provider protocol means one ``_plan_*`` function here plus
its codec and adapter module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import orjson

from .canonical import Request
from .codecs import anthropic as anthropic_codec
from .codecs import embeddings, openai_chat
from .codecs import gemini as gemini_codec
from .errors import InvalidRequest
from .exchange import Exchange, Kind
from .providers import anthropic, bedrock, gemini, openai, vertex
from .providers.openai import Op
from .providers.presets import WireProtocol
from .router import Route
from .upstream import UpstreamRequest

__all__ = ["Plan", "UnsupportedByTarget", "plan"]

_OPENAI_OPS: dict[Kind, Op] = {
    "chat": Op.CHAT,
    "completions": Op.COMPLETIONS,
    "responses": Op.RESPONSES,
    "embeddings": Op.EMBEDDINGS,
}


# OpenAI-type providers that serve /v1/responses themselves; to the others a Responses request
# is translated into chat completions (Codex reaching DeepSeek, Qwen, ...).
RESPONSES_NATIVE = frozenset({"openai", "azure", "mock", "openrouter", "xai", "doubao"})


class UnsupportedByTarget(InvalidRequest):
    """This target cannot serve this kind of request; another target might."""

    retryable = True
    code = "unsupported_by_provider"


@dataclass(slots=True)
class Plan:
    request: UpstreamRequest
    upstream_protocol: WireProtocol
    translate: bool
    client_wants_usage: bool = True
    openai_op: Op | None = None
    dropped: tuple[str, ...] = ()  # client tools the target does not run (a response header)


def plan(ex: Exchange, route: Route) -> Plan:
    protocol = route.protocol
    if protocol == "anthropic":
        return _plan_anthropic(ex, route)
    if protocol == "gemini":
        return _plan_gemini(ex, route)
    return _plan_openai(ex, route)


def _unsupported(ex: Exchange, route: Route) -> UnsupportedByTarget:
    return UnsupportedByTarget(
        f"{ex.kind} requests ({ex.protocol} protocol) cannot be sent to provider "
        f"{route.upstream.name!r}, which speaks {route.protocol}."
    )


def _request(
    route: Route, url: str, headers: dict[str, str], body: bytes, ex: Exchange
) -> UpstreamRequest:
    info = route.upstream.info
    return UpstreamRequest("POST", url, headers, body, info.name, ex.stream, info.config.timeouts)


def _plan_openai(ex: Exchange, route: Route) -> Plan:
    info, model = route.upstream.info, route.model
    if ex.protocol == "openai" and not (
        ex.kind == "responses" and info.config.type not in RESPONSES_NATIVE
    ):
        op = _OPENAI_OPS.get(ex.kind)
        if op is None:
            raise _unsupported(ex, route)
        body, wants = openai.prepare_body(
            info, op, ex.raw, ex.body, model, route.upstream.reasoning
        )
        url = openai.upstream_url(info, op, model)
        req = _request(route, url, openai.upstream_headers(info, ex.headers), body, ex)
        return Plan(req, "openai", False, wants, op)
    dropped: tuple[str, ...] = ()
    if ex.kind in ("chat", "responses"):
        canonical, dropped = _canonical(ex, route)
        max_n = info.preset.max_n if info.preset else None
        if max_n is not None and canonical.n > max_n:
            raise UnsupportedByTarget(f"provider {info.name!r} accepts n <= {max_n}", param="n")
        wire = openai_chat.encode_request(canonical, model, _encode_options(info))
        if route.upstream.reasoning is not None:
            wire = route.upstream.reasoning.fill(wire) or wire
        op = Op.CHAT
    elif ex.kind == "embeddings" and ex.protocol == "gemini":
        wire = embeddings.gemini_to_openai_request(_embed_batch(ex, route) or ex.body, model)
        op = Op.EMBEDDINGS
    else:
        raise _unsupported(ex, route)
    url = openai.upstream_url(info, op, model)
    headers = openai.upstream_headers(info, {})
    req = _request(route, url, headers, orjson.dumps(wire), ex)
    return Plan(req, "openai", True, True, op, dropped)


def _canonical(ex: Exchange, route: Route) -> tuple[Request, tuple[str, ...]]:
    """The client's request, decoded, without a built-in web search the target will not run."""
    req = ex.canonical()
    if req.web_search is None or _searches(req, route):
        return req, ()
    return replace(req, web_search=None), ("web_search",)


def _searches(req: Request, route: Route) -> bool:
    """Whether the target runs a client's web search with its own search tool. "auto" says yes
    where that is known to work: Anthropic's own API (not every Claude on Bedrock or Vertex
    has it), and Gemini for a request without functions or an allowed-domains list (Gemini
    refuses search mixed with function calling, and its search takes no domain list)."""
    config = route.upstream.info.config
    if config.web_search == "drop" or route.protocol == "openai":
        return False
    if config.web_search == "native":
        return True
    if route.protocol == "anthropic":
        return config.type == "anthropic"
    return not req.tools and not (req.web_search and req.web_search.allowed_domains)


_OPENAI_ITSELF = openai_chat.EncodeOptions(
    max_tokens_param="max_completion_tokens", reasoning_passback=False, top_k=False
)


def _encode_options(info: openai.ProviderInfo) -> openai_chat.EncodeOptions:
    """OpenAI and Azure want max_completion_tokens and reject top_k / reasoning_content;
    compatible servers take max_tokens and (DeepSeek, Kimi) need reasoning_content back."""
    if info.config.type == "azure" or "api.openai.com" in info.base_url:
        return _OPENAI_ITSELF
    return openai_chat.EncodeOptions(stream_usage=info.stream_usage)


# Anthropic accepts system messages inside ``messages`` only with this beta.
MID_CONVERSATION_SYSTEM_BETA = "mid-conversation-system-2026-04-07"


def _plan_anthropic(ex: Exchange, route: Route) -> Plan:
    info, model = route.upstream.info, route.model
    cloud = info.config.type in ("vertex", "bedrock")
    dropped: tuple[str, ...] = ()
    if ex.protocol == "anthropic" and ex.kind in ("chat", "count_tokens"):
        if cloud and ex.kind == "count_tokens":
            raise _unsupported(ex, route)
        beta = ex.query.get("beta") == "true"
        url = anthropic.messages_url(info, count_tokens=ex.kind == "count_tokens", beta=beta)
        body = anthropic.passthrough_body(ex.raw, ex.body, model)
        headers = anthropic.upstream_headers(info, ex.headers)
        translate = False
    elif ex.kind in ("chat", "responses"):
        canonical, dropped = _canonical(ex, route)
        wire = anthropic_codec.encode_request(canonical, model)
        body = orjson.dumps(wire)
        url = anthropic.messages_url(info)
        headers = anthropic.upstream_headers(info, None)
        if any(m.get("role") == "system" for m in wire.get("messages", ())):
            headers["anthropic-beta"] = MID_CONVERSATION_SYSTEM_BETA
        translate = True
    else:
        raise _unsupported(ex, route)
    if cloud:
        url, body = _cloud_claude(route, body, headers, ex.stream)
    return Plan(_request(route, url, headers, body, ex), "anthropic", translate, dropped=dropped)


def _cloud_claude(
    route: Route, body: bytes, headers: dict[str, str], stream: bool
) -> tuple[str, bytes]:
    """Claude on Bedrock or Vertex: the model moves to the URL, the version into the body."""
    config, model = route.upstream.info.config, route.model
    headers.pop("x-api-key", None)
    wire = orjson.loads(body)
    base = route.upstream.info.config.base_url
    if config.type == "bedrock":
        beta = headers.pop("anthropic-beta", None)
        headers.pop("anthropic-version", None)
        url = bedrock.invoke_url(config.region or "", model, stream=stream, base_url=base)
        return url, orjson.dumps(bedrock.to_bedrock_body(wire, beta=beta))
    url = vertex.claude_url(
        config.project or "", config.region or "", model, stream=stream, base_url=base
    )
    return url, orjson.dumps(vertex.to_vertex_claude_body(wire))


def _gemini_url(route: Route, method: str, stream: bool) -> str:
    config = route.upstream.info.config
    if config.type == "vertex":
        return vertex.gemini_url(
            config.project or "",
            config.region or "",
            route.model,
            method,
            stream=stream,
            base_url=config.base_url,
        )
    return gemini.method_url(route.upstream.info, route.model, method, stream=stream)


def _embed_batch(ex: Exchange, route: Route) -> dict[str, object] | None:
    """A google-genai batch folded into one request only because the alias looked like a
    multimodal embedder, unfolded for this target (see ``embeddings.unfold_sdk_batch``)."""
    if ex.gemini_method != "batchEmbedContents":
        return None
    client = ex.headers.get("x-goog-api-client", "")
    return embeddings.unfold_sdk_batch(ex.body, ex.model, route.model, client)


def _plan_gemini(ex: Exchange, route: Route) -> Plan:
    info, model = route.upstream.info, route.model
    headers = gemini.upstream_headers(info)
    if ex.protocol == "gemini" and ex.gemini_method:
        url = _gemini_url(route, ex.gemini_method, ex.stream)
        unfolded = _embed_batch(ex, route)
        if unfolded is None:
            body = gemini.passthrough_body(ex.raw, ex.body, model)
        else:
            body = gemini.passthrough_body(orjson.dumps(unfolded), unfolded, model)
        return Plan(_request(route, url, headers, body, ex), "gemini", False)
    dropped: tuple[str, ...] = ()
    if ex.kind in ("chat", "responses"):
        canonical, dropped = _canonical(ex, route)
        wire = gemini_codec.encode_request(canonical, model)
        method = "streamGenerateContent" if ex.stream else "generateContent"
    elif ex.kind == "embeddings" and ex.protocol == "openai":
        wire = embeddings.openai_to_gemini_request(ex.body, model)
        method = "batchEmbedContents"
    else:
        raise _unsupported(ex, route)
    url = _gemini_url(route, method, ex.stream)
    req = _request(route, url, headers, orjson.dumps(wire), ex)
    return Plan(req, "gemini", True, dropped=dropped)
