"""Vertex AI as an upstream for Gemini and Claude: service-account auth, URLs, Claude body (pure).

Vertex takes ``Authorization: Bearer <OAuth access token>``. With a service-account key file
(:class:`ServiceAccount`) the token comes from the OAuth 2.0 JWT-bearer grant (RFC 7523): a JWT
signed RS256 with the account's private key (:func:`build_assertion`) is exchanged at the
account's ``token_uri`` for a token that lives about an hour. :class:`TokenSource` caches it,
refreshes it five minutes before it expires, and lets concurrent callers share one refresh.
The exchange itself is an injected ``fetch`` so this module opens no sockets.

Gemini on Vertex speaks the Generative Language JSON at :func:`gemini_url`; Claude on Vertex
speaks Anthropic Messages (SSE when streaming) at :func:`claude_url`, with ``model`` moved into
the URL and ``anthropic_version`` in the body (:func:`to_vertex_claude_body`).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import orjson

from ..errors import QiaoError, UpstreamError

if TYPE_CHECKING:  # cryptography is imported when a service account is loaded
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ASSERTION_LIFETIME",
    "CLOUD_PLATFORM_SCOPE",
    "JWT_BEARER_GRANT",
    "VERTEX_CLAUDE_VERSION",
    "ServiceAccount",
    "TokenFetch",
    "TokenSource",
    "build_assertion",
    "claude_count_tokens_url",
    "claude_url",
    "gemini_url",
    "to_vertex_claude_body",
]

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
VERTEX_CLAUDE_VERSION = "vertex-2023-10-16"
ASSERTION_LIFETIME = timedelta(hours=1)  # the longest Google accepts
_DEFAULT_TOKEN_LIFETIME = 3600.0  # seconds, when a token reply omits expires_in

TokenFetch = Callable[[str, dict[str, str]], Awaitable[Mapping[str, object]]]
"""``(token_uri, form) -> decoded JSON reply``: POSTs ``form`` url-encoded. Transport failures
should be raised as :class:`qiao.errors.QiaoError`; an OAuth error reply may be returned."""

# ---------------------------------------------------------------------------------------------
# service account and JWT assertion

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The fields of a service-account key file that the token exchange needs."""

    client_email: str
    private_key: str = field(repr=False)  # PEM
    token_uri: str
    project_id: str
    private_key_id: str | None = None
    _key: rsa.RSAPrivateKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if "@" not in self.client_email:
            raise ValueError("service account client_email is not an email address")
        if not self.project_id:
            raise ValueError("service account project_id is empty")
        uri = urlsplit(self.token_uri)
        if uri.scheme != "https" and not (uri.scheme == "http" and uri.hostname in _LOOPBACK):
            raise ValueError("service account token_uri must be an https URL")
        try:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import rsa

            key = serialization.load_pem_private_key(self.private_key.encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("service account private_key is not an unencrypted PEM key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("service account private_key is not an RSA key")
        object.__setattr__(self, "_key", key)

    @classmethod
    def from_json(cls, text: str | bytes) -> ServiceAccount:
        """Read a key file as downloaded from Google Cloud; ValueError names what is wrong."""
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("service account key file is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("service account key file is not a JSON object")
        if data.get("type", "service_account") != "service_account":
            raise ValueError(f"credentials of type {data.get('type')!r} are not a service account")
        fields = {}
        for name in ("client_email", "private_key", "token_uri", "project_id"):
            value = data.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"service account key file lacks {name}")
            fields[name] = value
        key_id = data.get("private_key_id")
        return cls(**fields, private_key_id=key_id if isinstance(key_id, str) and key_id else None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def build_assertion(sa: ServiceAccount, now: datetime, scope: str = CLOUD_PLATFORM_SCOPE) -> str:
    """A JWT (RS256) asking ``sa.token_uri`` for an access token with ``scope``."""
    if now.tzinfo is None:
        raise ValueError("build_assertion needs a timezone-aware time")
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if sa.private_key_id:
        header["kid"] = sa.private_key_id
    issued = int(now.timestamp())
    claims = {
        "iss": sa.client_email,
        "scope": scope,
        "aud": sa.token_uri,
        "iat": issued,
        "exp": issued + int(ASSERTION_LIFETIME.total_seconds()),
    }
    signing_input = f"{_b64url(orjson.dumps(header))}.{_b64url(orjson.dumps(claims))}"
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = sa._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


# ---------------------------------------------------------------------------------------------
# access tokens


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: datetime
    expires_at: datetime


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TokenSource:
    """Caches one account's access token; refreshes ``refresh_margin`` before it expires.

    Concurrent callers that find the token stale share one refresh. When a refresh fails while
    the old token has not yet expired, callers keep getting the old token (the next call tries
    again); once it has expired, the failure is raised.
    """

    __slots__ = ("_account", "_cached", "_clock", "_inflight", "_margin", "_scope")

    def __init__(
        self,
        account: ServiceAccount,
        *,
        scope: str = CLOUD_PLATFORM_SCOPE,
        clock: Callable[[], datetime] = _utcnow,
        refresh_margin: timedelta = timedelta(minutes=5),
    ) -> None:
        self._account = account
        self._scope = scope
        self._clock = clock
        self._margin = refresh_margin
        self._cached: _Token | None = None
        self._inflight: asyncio.Future[_Token] | None = None

    async def token(self, fetch: TokenFetch) -> str:
        cached = self._cached
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        inflight = self._inflight
        if inflight is None or inflight.done():
            inflight = self._inflight = asyncio.ensure_future(self._refresh(fetch))
            inflight.add_done_callback(self._settle)
        try:
            # shield: one caller giving up must not cancel the refresh the others wait for
            return (await asyncio.shield(inflight)).value
        except QiaoError:
            if cached is not None and self._clock() < cached.expires_at:
                return cached.value
            raise

    def _settle(self, done: asyncio.Future[_Token]) -> None:
        if self._inflight is done:
            self._inflight = None
        if not done.cancelled():
            done.exception()  # retrieved: a refresh nobody waits for any more must not log

    async def _refresh(self, fetch: TokenFetch) -> _Token:
        issued = self._clock()
        form = {
            "grant_type": JWT_BEARER_GRANT,
            "assertion": build_assertion(self._account, issued, self._scope),
        }
        token = _parse_token_reply(await fetch(self._account.token_uri, form), issued, self._margin)
        self._cached = token
        return token


def _parse_token_reply(reply: Mapping[str, object], issued: datetime, margin: timedelta) -> _Token:
    error = reply.get("error")
    if error is not None:
        why = reply.get("error_description") or ""
        raise UpstreamError(
            f"Vertex token exchange refused: {error}{': ' if why else ''}{why}",
            code="upstream_auth_error",
        )
    value = reply.get("access_token")
    if not isinstance(value, str) or not value:
        raise UpstreamError("Vertex token reply has no access_token", code="upstream_auth_error")
    lifetime = reply.get("expires_in", _DEFAULT_TOKEN_LIFETIME)
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        raise UpstreamError("Vertex token reply has a bad expires_in", code="upstream_auth_error")
    life = timedelta(seconds=lifetime)
    # A token shorter-lived than twice the margin is refreshed at half its life instead.
    early = min(margin, life / 2)
    return _Token(value, refresh_at=issued + life - early, expires_at=issued + life)


# ---------------------------------------------------------------------------------------------
# URLs and body

_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_METHOD = re.compile(r"[A-Za-z]+")


def _base(region: str, base_url: str | None) -> str:
    if not _REGION.fullmatch(region):
        raise ValueError(f"not a Vertex AI region: {region!r}")
    if base_url:
        return base_url.rstrip("/")
    host = (
        "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
    )
    return f"https://{host}"


def _model_path(project: str, region: str, publisher: str, model: str) -> str:
    if not project or not model:
        raise ValueError("Vertex AI project and model must not be empty")
    # '@' stays raw: Claude model ids on Vertex carry a version after it.
    return (
        f"/v1/projects/{quote(project, safe='')}/locations/{region}"
        f"/publishers/{publisher}/models/{quote(model, safe='@')}"
    )


def gemini_url(
    project: str,
    region: str,
    model: str,
    method: str,
    *,
    stream: bool,
    base_url: str | None = None,
) -> str:
    """``…/publishers/google/models/{model}:{method}``, with ``?alt=sse`` when streaming
    (``method`` is then ``streamGenerateContent``); ``base_url`` replaces the host (tests)."""
    if not _METHOD.fullmatch(method):
        raise ValueError(f"not a Vertex AI method name: {method!r}")
    path = _model_path(project, region, "google", model)
    return f"{_base(region, base_url)}{path}:{method}{'?alt=sse' if stream else ''}"


def claude_url(
    project: str, region: str, model: str, *, stream: bool, base_url: str | None = None
) -> str:
    """``…/publishers/anthropic/models/{model}:rawPredict`` or ``:streamRawPredict``."""
    method = "streamRawPredict" if stream else "rawPredict"
    return f"{_base(region, base_url)}{_model_path(project, region, 'anthropic', model)}:{method}"


def claude_count_tokens_url(project: str, region: str, *, base_url: str | None = None) -> str:
    """Anthropic ``count_tokens`` on Vertex (the model goes in the body there)."""
    path = _model_path(project, region, "anthropic", "count-tokens")
    return f"{_base(region, base_url)}{path}:rawPredict"


def to_vertex_claude_body(anthropic_body: Mapping[str, Any]) -> dict[str, Any]:
    """The Anthropic Messages body for Vertex: no ``model`` (it is in the URL), and an
    ``anthropic_version``. ``stream`` stays: ``streamRawPredict`` reads it."""
    out = {k: v for k, v in anthropic_body.items() if k != "model"}
    out.setdefault("anthropic_version", VERTEX_CLAUDE_VERSION)
    return out
