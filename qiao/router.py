"""Model aliases → ordered upstream targets.

Resolution order: an exact alias, then alias patterns (``gpt-*``) in config
order, then an explicit ``provider/model`` name. Results are cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from .config import Config
from .errors import NotFound
from .providers.cloud import Authenticator
from .providers.openai import ProviderInfo
from .providers.presets import WireProtocol
from .providers.reasoning import ReasoningMemory
from .upstream import Transport

__all__ = ["Route", "Router"]

_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Upstream:
    """A configured provider at run time: what to say and how to send it."""

    info: ProviderInfo
    transport: Transport
    reasoning: ReasoningMemory | None = None  # for presets that need reasoning sent back
    auth: Authenticator | None = None  # signs each call (Vertex, Bedrock)

    @property
    def name(self) -> str:
        return self.info.name


@dataclass(frozen=True, slots=True)
class Route:
    upstream: Upstream
    model: str
    protocol: WireProtocol = "openai"  # the wire protocol this target speaks


def _route(upstream: Upstream, model: str) -> Route:
    config = upstream.info.config
    protocol = config.resolved_protocol
    if config.type == "vertex" and model.startswith("claude"):
        protocol = "anthropic"
    return Route(upstream, model, protocol)


class Router:
    def __init__(self, config: Config, upstreams: dict[str, Upstream]) -> None:
        self._upstreams = upstreams
        self._exact: dict[str, tuple[tuple[str, str | None], ...]] = {}
        self._patterns: list[tuple[str, tuple[tuple[str, str | None], ...]]] = []
        for alias, targets in config.models.items():
            spec = tuple((t.provider, t.model) for t in targets)
            if any(c in alias for c in "*?["):
                self._patterns.append((alias, spec))
            else:
                self._exact[alias] = spec
        self._cache: dict[str, tuple[Route, ...]] = {}

    @property
    def aliases(self) -> list[str]:
        return list(self._exact)

    def resolve(self, model: str) -> tuple[Route, ...]:
        routes = self._cache.get(model)
        if routes is None:
            routes = self._resolve(model)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[model] = routes
        return routes

    def _resolve(self, model: str) -> tuple[Route, ...]:
        spec = self._exact.get(model)
        if spec is None:
            spec = next((s for p, s in self._patterns if fnmatchcase(model, p)), None)
        if spec is not None:
            return tuple(_route(self._upstreams[p], m or model) for p, m in spec)
        provider, sep, rest = model.partition("/")
        if sep and rest and provider in self._upstreams:
            return (_route(self._upstreams[provider], rest),)
        raise NotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
