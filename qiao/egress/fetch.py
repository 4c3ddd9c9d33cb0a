"""Fetching remote media (images, PDFs) for providers that need bytes, through the SSRF guard."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterable

import aiohttp

from ..canonical import Document, Image, Message, Request, ToolResult
from ..errors import InvalidRequest
from .ssrf import GuardedResolver, check_url

__all__ = ["MediaFetcher"]

MAX_BYTES = 20 * 1024 * 1024
_ACCEPTED = ("image/", "application/pdf", "text/plain")


class MediaFetcher:
    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        max_bytes: int = MAX_BYTES,
        timeout: float = 15.0,
    ) -> None:
        self._allow = tuple(ipaddress.ip_network(a, strict=False) for a in allow)
        self._max = max_bytes
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self._allow), limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, url: str) -> tuple[str, bytes]:
        """(media type, bytes) of ``url``, or a clear 400."""
        check_url(url, self._allow)
        try:
            async with self._client().get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise InvalidRequest(f"fetching {url!r} failed: HTTP {resp.status}")
                media_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not media_type.startswith(_ACCEPTED):
                    raise InvalidRequest(
                        f"{url!r} is {media_type or 'untyped'}, not an image or PDF"
                    )
                if (resp.content_length or 0) > self._max:
                    raise InvalidRequest(f"{url!r} is larger than {self._max} bytes")
                data = await resp.content.read(self._max + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InvalidRequest(f"cannot fetch {url!r}: {type(exc).__name__}") from None
        if len(data) > self._max:
            raise InvalidRequest(f"{url!r} is larger than {self._max} bytes")
        return media_type, data

    async def inline(self, request: Request) -> None:
        """Replace every remote image or document in ``request`` by its bytes."""
        for message in request.messages:
            await self._inline_message(message)

    async def _inline_message(self, message: Message) -> None:
        for part in message.parts:
            targets = part.content if isinstance(part, ToolResult) else [part]
            for item in targets:
                if isinstance(item, Image | Document) and item.url and not item.data:
                    media_type, data = await self.fetch(item.url)
                    item.media_type = item.media_type or media_type
                    item.data = base64.b64encode(data).decode()
                    item.url = None
