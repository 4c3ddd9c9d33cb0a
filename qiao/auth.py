"""Virtual keys: who is calling, and which models they may use.

Presented keys are hashed (SHA-256) and looked up by digest, so lookup time
depends on the digest, never on how many leading characters of a real key an
attacker guessed; the stored digest is then compared in constant time. Keys
themselves are never logged: a caller is known by the key's ``name``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from .config import Config
from .errors import AuthenticationFailed, PermissionDenied

__all__ = ["KeyRing", "Principal", "credential_from"]

ADMIN = "admin"
_CACHE_LIMIT = 4096


@dataclass(slots=True)
class Principal:
    name: str
    patterns: tuple[str, ...]
    admin: bool = False
    digest: bytes = b""
    _allowed: dict[str, bool] = field(default_factory=dict, repr=False)

    def allows(self, model: str) -> bool:
        hit = self._allowed.get(model)
        if hit is None:
            hit = self.admin or any(fnmatchcase(model, p) for p in self.patterns)
            if len(self._allowed) >= _CACHE_LIMIT:
                self._allowed.clear()
            self._allowed[model] = hit
        return hit


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    def __init__(self, config: Config) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        if config.admin_key is not None:
            self._add(config.admin_key.get_secret_value(), Principal(ADMIN, ("*",), admin=True))
        for k in config.keys:
            self._add(k.key.get_secret_value(), Principal(k.name, k.models))

    def _add(self, secret: str, principal: Principal) -> None:
        principal.digest = _digest(secret)
        self._by_digest[principal.digest] = principal

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        digest = _digest(presented)
        principal = self._by_digest.get(digest)
        if principal is None or not hmac.compare_digest(principal.digest, digest):
            raise AuthenticationFailed("Invalid API key.")
        return principal

    @staticmethod
    def check_model(principal: Principal, model: str) -> None:
        if not principal.allows(model):
            raise PermissionDenied(
                f"This key may not use model {model!r}.", param="model", code="model_not_allowed"
            )


def credential_from(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The caller's key, from the places the official SDKs put it (protocols.md §1.7)."""
    value = headers.get("x-api-key")
    if value:
        return value.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer":
            return token.strip()
        return None
    value = headers.get("api-key") or headers.get("x-goog-api-key") or query.get("key")
    return value.strip() if value else None
