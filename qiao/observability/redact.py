"""The one redaction function every sink goes through (logs, errors, responses)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["Redactor"]

# Key-looking tokens: OpenAI/Anthropic/Google/DeepSeek style keys, masked echoes
# such as "sk-abc***wxyz", and Bearer credentials.
_PATTERNS = re.compile(
    r"(?:sk|rk|pk|ak)-[A-Za-z0-9_\-*.]{3,}"
    r"|AIza[0-9A-Za-z_\-*]{6,}"
    r"|[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*"
    r"|(?i:bearer)\s+[A-Za-z0-9_\-.=/+]{6,}"
)


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
