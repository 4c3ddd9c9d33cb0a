"""Request signing for cloud-hosted models, applied just before a call is sent.

Vertex AI takes an OAuth access token minted from a service account (cached, refreshed
before expiry, one refresh shared by concurrent callers); AWS Bedrock takes a SigV4 signature
over the final URL, headers and body (or a Bedrock API key as a Bearer token). Bedrock streams
arrive in AWS's binary event-stream framing and are turned back into Anthropic SSE here, so
everything downstream sees the Anthropic protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from ..config import ProviderConfig
from ..errors import Unavailable, UpstreamError
from ..upstream import UpstreamRequest, UpstreamResponse
from . import bedrock, vertex

__all__ = [
    "Authenticator",
    "BedrockAuth",
    "StoredKeyAuth",
    "VertexAuth",
    "authenticator_for",
    "bedrock_stream",
]


class Authenticator(Protocol):
    async def apply(self, request: UpstreamRequest) -> None: ...

    async def close(self) -> None: ...


class VertexAuth:
    def __init__(self, config: ProviderConfig) -> None:
        if config.credentials_json is not None:
            text = config.credentials_json.get_secret_value()
        else:
            text = Path(config.credentials_file or "").read_text(encoding="utf-8")
        self._tokens = vertex.TokenSource(vertex.ServiceAccount.from_json(text))
        self._timeout = config.timeouts.connect + config.timeouts.first_byte
        self._session: aiohttp.ClientSession | None = None

    async def apply(self, request: UpstreamRequest) -> None:
        token = await self._tokens.token(self._fetch)
        request.headers["Authorization"] = f"Bearer {token}"

    async def _fetch(self, url: str, form: Mapping[str, str]) -> Mapping[str, object]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=min(self._timeout, 30)), trust_env=False
            )
        try:
            async with self._session.post(url, data=dict(form), allow_redirects=False) as resp:
                reply: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamError(
                f"cannot obtain a Vertex AI access token: {type(exc).__name__}",
                code="upstream_auth_error",
            ) from None
        if not isinstance(reply, dict):
            raise UpstreamError("the token endpoint answered with no JSON object")
        return reply

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class BedrockAuth:
    def __init__(self, config: ProviderConfig) -> None:
        self._region = config.region or ""
        self._bearer = config.api_key.get_secret_value() if config.api_key else None
        self._access = config.aws_access_key_id or ""
        secret = config.aws_secret_access_key
        self._secret = secret.get_secret_value() if secret else ""
        token = config.aws_session_token
        self._session_token = token.get_secret_value() if token else None

    async def apply(self, request: UpstreamRequest) -> None:
        if self._bearer and not self._access:
            request.headers = bedrock.bearer_headers(request.headers, self._bearer)
            return
        request.headers = bedrock.sigv4_headers(
            request.method,
            request.url,
            request.headers,
            request.body or b"",
            access_key=self._access,
            secret_key=self._secret,
            session_token=self._session_token,
            region=self._region,
            now=datetime.now(UTC),
        )

    async def close(self) -> None:
        pass


class StoredKeyAuth:
    """A provider key kept encrypted in the store; the engine refreshes ``key`` from it."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.key: str | None = None
        protocol = config.resolved_protocol
        if config.type == "azure":
            self._header, self._prefix = "api-key", ""
        elif protocol == "anthropic":
            self._header, self._prefix = "x-api-key", ""
        elif protocol == "gemini":
            self._header, self._prefix = "x-goog-api-key", ""
        else:
            self._header, self._prefix = "Authorization", "Bearer "

    async def apply(self, request: UpstreamRequest) -> None:
        if not self.key:
            raise Unavailable(
                f"No key is stored for provider {self.name!r} (set it with the admin API or "
                "`qiao providers set-key`)."
            )
        request.headers[self._header] = self._prefix + self.key

    async def close(self) -> None:
        pass


def authenticator_for(name: str, config: ProviderConfig) -> Authenticator | None:
    if config.api_key_from == "store":
        return StoredKeyAuth(name, config)
    if config.type == "vertex":
        return VertexAuth(config)
    if config.type == "bedrock":
        return BedrockAuth(config)
    return None


class _BedrockStream:
    """An upstream response whose event-stream body is re-framed as Anthropic SSE."""

    def __init__(self, inner: UpstreamResponse) -> None:
        self._inner = inner
        self.status = inner.status
        headers = CIMultiDict(inner.headers)
        headers["Content-Type"] = "text/event-stream"
        self.headers: CIMultiDictProxy[str] | CIMultiDict[str] = headers

    async def read(self) -> bytes:
        return await self._inner.read()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        decoder = bedrock.EventStreamDecoder()
        async for chunk in self._inner.iter_chunks():
            sse = bedrock.bedrock_chunks_to_sse(decoder.feed(chunk))
            if sse:
                yield sse
        decoder.close()

    def close(self) -> None:
        self._inner.close()


def bedrock_stream(response: UpstreamResponse) -> UpstreamResponse:
    return _BedrockStream(response)
