"""Protocol name → codec module. Adding a protocol is one module plus one line here."""

from __future__ import annotations

from types import ModuleType

from ..providers.presets import WireProtocol
from . import anthropic, gemini, openai_chat, responses

__all__ = ["client_codec", "codec_for"]

_CODECS: dict[str, ModuleType] = {
    "openai": openai_chat,
    "anthropic": anthropic,
    "gemini": gemini,
}


def codec_for(protocol: WireProtocol) -> ModuleType:
    return _CODECS[protocol]


def client_codec(protocol: WireProtocol, kind: str) -> ModuleType:
    """The codec of what the client speaks: the Responses API is OpenAI's second dialect."""
    if kind == "responses":
        return responses
    return _CODECS[protocol]
