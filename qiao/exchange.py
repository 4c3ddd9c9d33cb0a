"""One client request as the engine sees it, whatever protocol it arrived in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .canonical import Request
from .providers.presets import WireProtocol

__all__ = ["Exchange", "Kind"]

# What is being asked, across protocols: "chat" is OpenAI chat completions, Anthropic messages
# and Gemini generateContent alike; the others exist in some protocols only.
Kind = Literal["chat", "completions", "responses", "embeddings", "count_tokens"]


@dataclass(slots=True)
class Exchange:
    protocol: WireProtocol  # the client's
    kind: Kind
    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    headers: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)
    gemini_method: str | None = None  # generateContent, batchEmbedContents, ...
    _canonical: Request | None = None

    def canonical(self) -> Request:
        """The request decoded into canonical form (once, on first need)."""
        if self._canonical is None:
            from .codecs.registry import client_codec

            self._canonical = client_codec(self.protocol, self.kind).decode_request(
                self.body, model=self.model, stream=self.stream
            )
        return self._canonical
