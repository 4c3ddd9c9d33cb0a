"""Protocol name → codec module. Adding a protocol is one module plus one line here."""

from __future__ import annotations

from types import ModuleType

from ..providers.presets import Protocol
from . import anthropic, gemini, openai_chat

__all__ = ["codec_for"]

_CODECS: dict[str, ModuleType] = {
    "openai": openai_chat,
    "anthropic": anthropic,
    "gemini": gemini,
}


def codec_for(protocol: Protocol) -> ModuleType:
    return _CODECS[protocol]
