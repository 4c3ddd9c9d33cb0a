"""The one redaction function every sink goes through (logs, errors, responses)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = ["Redactor"]

# Key-looking tokens: OpenAI/Anthropic/Google/DeepSeek style keys, masked echoes
# such as "sk-abc***wxyz", and Bearer credentials. A masked echo only starts where a word does
# (the lookbehind): unanchored, a long run of letters made the scan quadratic (64 KiB of an
# upstream's error body took a minute).
_PATTERNS = re.compile(
    r"(?:sk|rk|pk|ak)-[A-Za-z0-9_\-*.]{3,}"
    r"|AIza[0-9A-Za-z_\-*]{6,}"
    r"|(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9_\-.=/+]{6,}"
)

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\(.)")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


def _unescape(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return chr(int(m.group(1), 16))
    return _SIMPLE.get(m.group(2), m.group(2))


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first so a key is removed whole before any shorter secret inside it.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        if len(secret) >= 4 and secret not in self._secrets:
            self._secrets = sorted({*self._secrets, secret}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "[redacted]")
        return _PATTERNS.sub("[redacted]", text)

    def body(self, raw: bytes) -> bytes:
        """An upstream body with every secret removed, as text and as JSON decodes it.

        The text pass catches a key written plainly; a key written with JSON escapes
        (``\\u0073k-…``, ``\\/``) survives it. So a body with escapes is also decoded: a JSON
        body string by string (re-encoded when any changed, so it stays JSON), anything else
        (a truncated body, say) by undoing the escapes and redacting the plain text.
        """
        clean = self(raw.decode("utf-8", "replace"))
        if "\\" not in clean:
            return clean.encode()  # no escapes: nothing can hide
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            plain = _ESCAPE.sub(_unescape, clean)
            scrubbed = self(plain)
            return (scrubbed if scrubbed != plain else clean).encode("utf-8", "replace")
        scrubbed_value, changed = self._walk(value)
        return orjson.dumps(scrubbed_value) if changed else clean.encode()

    def _walk(self, value: Any) -> tuple[Any, bool]:
        if isinstance(value, str):
            out = self(value)
            return out, out != value
        if isinstance(value, list):
            items = [self._walk(v) for v in value]
            return [v for v, _ in items], any(c for _, c in items)
        if isinstance(value, dict):
            changed = False
            obj: dict[str, Any] = {}
            for k, v in value.items():
                key, kc = self._walk(k)
                val, vc = self._walk(v)
                obj[key] = val
                changed = changed or kc or vc
            return obj, changed
        return value, False
