"""Virtual keys: who is calling, and which models they may use.

Presented keys are hashed (SHA-256) and looked up by digest, so lookup time
depends on the digest, never on how many leading characters of a real key an
attacker guessed; the stored digest is then compared in constant time. Keys
themselves are never logged: a caller is known by the key's ``name``.

Every route authenticates through :meth:`KeyRing.authenticate_request` (key, expiry, source
address), so ``/v1``, ``/admin`` and the rest cannot drift apart in what they check.

Model scopes are patterns where ``*`` is any run of characters except ``/`` and ``?`` is one
such character (so ``gemini-*`` never reaches ``gemini-x/...``, while ``openai/*`` matches
``openai/gpt-4o``); a scope of exactly ``*`` is every model, ``provider/model`` names included.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import AuthenticationFailed, PermissionDenied, Unavailable
from .storage.models import Budget, Limits, Team, VirtualKey

if TYPE_CHECKING:
    from .observability.accesslog import RequestRecord

__all__ = ["KeyRing", "Principal", "credential_from", "digest", "scope_matcher"]

ADMIN = "admin"
_CACHE_LIMIT = 4096


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Principal:
    name: str
    patterns: tuple[str, ...]
    admin: bool = False
    digest: bytes = b""
    key_id: str | None = None  # None for keys written in the config file
    team_id: str | None = None
    role: str = "user"
    limits: Limits = field(default_factory=Limits)
    model_limits: dict[str, Limits] = field(default_factory=dict)
    budget: Budget | None = None
    team_limits: Limits = field(default_factory=Limits)
    team_budget: Budget | None = None
    networks: tuple[Network, ...] = ()
    expires_at: float | None = None  # epoch seconds
    from_store: bool = False
    _allowed: dict[str, bool] = field(default_factory=dict, repr=False)
    gate_scopes: dict[str, Any] = field(default_factory=dict, repr=False)  # policies.gate

    @property
    def scope_id(self) -> str:
        return self.key_id or f"cfg:{self.name}"

    def allows_ip(self, address: str | None) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address((address or "").split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def allows(self, model: str) -> bool:
        """Whether this key's ``models`` scope covers ``model`` (admin keys included: the
        config's ``admin_key`` has the scope ``*``, a stored admin key the one it was given)."""
        hit = self._allowed.get(model)
        if hit is None:
            hit = any(scope_matcher(p)(model) for p in self.patterns)
            if len(self._allowed) >= _CACHE_LIMIT:
                self._allowed.clear()
            self._allowed[model] = hit
        return hit


@functools.lru_cache(maxsize=1024)
def scope_matcher(pattern: str) -> Callable[[str], bool]:
    """A model-scope pattern as a predicate: ``*`` is ``[^/]*``, ``?`` is ``[^/]``, the rest
    literal (fnmatch's ``*`` crosses ``/``, so ``gemini-*`` would admit ``gemini-x/y``)."""
    if pattern == "*":
        return _any_model
    parts = ("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    regex = re.compile("".join(parts), re.DOTALL)
    return lambda model: regex.fullmatch(model) is not None


def _any_model(model: str) -> bool:
    return True


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


_digest = digest


def principal_for(key: VirtualKey, team: Team | None) -> Principal:
    return Principal(
        name=key.name,
        patterns=key.models,
        admin=key.role == "admin",
        digest=key.key_hash,
        key_id=key.id,
        team_id=key.team_id,
        role=key.role,
        limits=key.limits,
        model_limits=dict(key.model_limits),
        budget=key.budget,
        team_limits=team.limits if team else Limits(),
        team_budget=team.budget if team else None,
        networks=tuple(ipaddress.ip_network(c, strict=False) for c in key.cidrs),
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        from_store=True,
    )


class KeyRing:
    """Config keys plus (when a store is configured) every live key of the store, in memory.

    The store's keys are loaded whole and kept current by :mod:`qiao.keysync`, so the hot path
    never waits on the database. If the database is unreachable, known keys keep working for
    ``stale_after`` seconds; an unknown key then gets 503 (the store might know it), never 401.
    """

    def __init__(self, config: Config, *, stale_after: float = 300.0) -> None:
        self._static: dict[bytes, Principal] = {}
        if config.admin_key is not None:
            self._add(config.admin_key.get_secret_value(), Principal(ADMIN, ("*",), admin=True))
        for k in config.keys:
            self._add(
                k.key.get_secret_value(),
                Principal(k.name, k.models, limits=k.limits, budget=k.budget),
            )
        self._by_digest: dict[bytes, Principal] = dict(self._static)
        self.store_backed = False
        self.synced_at: float | None = None  # monotonic time of the last successful sync
        self.store_down = False
        self._stale_after = stale_after

    def _add(self, secret: str, principal: Principal) -> None:
        principal.digest = digest(secret)
        self._static[principal.digest] = principal

    def __len__(self) -> int:
        return len(self._by_digest)

    # ------------------------------------------------------------------ store sync
    def replace_store_keys(self, principals: Iterable[Principal]) -> None:
        merged = {p.digest: p for p in principals}
        merged.update(self._static)  # a config key always wins
        self._by_digest = merged
        self.store_backed = True

    def upsert(self, principal: Principal | None, old_digests: Iterable[bytes] = ()) -> None:
        for d in old_digests:
            if d not in self._static:
                self._by_digest.pop(d, None)
        if principal is not None and principal.digest not in self._static:
            self._by_digest[principal.digest] = principal

    def principals(self) -> list[Principal]:
        return list(self._by_digest.values())

    def mark_synced(self, ok: bool) -> None:
        if ok:
            self.synced_at = time.monotonic()
        self.store_down = not ok

    def _stale(self) -> bool:
        if not self.store_backed:
            return False
        if self.synced_at is None:
            return True
        return self.store_down and time.monotonic() - self.synced_at > self._stale_after

    # ------------------------------------------------------------------ the hot path
    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        d = digest(presented)
        principal = self._by_digest.get(d)
        if principal is None or not hmac.compare_digest(principal.digest, d):
            if self.store_down:
                raise Unavailable("The key store is unavailable; try again shortly.")
            raise AuthenticationFailed("Invalid API key.")
        if principal.from_store:
            if self._stale():
                raise Unavailable("The key store is unavailable; try again shortly.")
            if principal.expires_at is not None and principal.expires_at <= time.time():
                raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return principal

    def authenticate_request(
        self,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        remote: str | None,
        rec: RequestRecord | None = None,
    ) -> Principal:
        """The one authentication of every route: the presented key (401 if missing, unknown
        or expired; 503 if the store cannot tell), then its source-address scope (403).
        ``rec`` learns who called before the address check, so a refusal is logged by key."""
        principal = self.authenticate(credential_from(headers, query))
        if rec is not None:
            rec.key = principal.name
            rec.key_id = principal.scope_id
            rec.team_id = principal.team_id
        if not principal.allows_ip(remote):
            raise PermissionDenied(
                "This key may not be used from this address.", code="ip_not_allowed"
            )
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
