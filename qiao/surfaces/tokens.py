"""A local token estimate, for count-tokens calls whose target has no such endpoint.

No tokenizer files are downloaded (many users cannot reach them): the estimate counts about
four ASCII characters per token and one token per other character (CJK text is close to one
token per character in current tokenizers). It is an estimate and is documented as one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimate_tokens"]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in ("type", "role") for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def estimate_tokens(body: dict[str, Any]) -> int:
    total = 0
    for text in _strings({k: v for k, v in body.items() if k != "model"}):
        ascii_chars = sum(1 for c in text if c < "\x80")
        total += (ascii_chars + 3) // 4 + (len(text) - ascii_chars)
    return max(1, total)
