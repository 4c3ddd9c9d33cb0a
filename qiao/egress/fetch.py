"""Fetching remote media (images, PDFs) for providers that need bytes, through the SSRF guard.

Whatever goes wrong — a refused address, no answer, a non-200 status, a type that is not media,
a body over the cap — the caller gets the same message: telling these apart would turn the
fetcher into a port scanner and a reader of internal services. Operators see the reason in the
``qiao.egress`` debug log.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
from collections.abc import Iterable, Iterator

import aiohttp

from ..canonical import Document, Image, Request, ToolResult
from ..errors import InvalidRequest
from .ssrf import GuardedResolver, Network, Refused, guarded_socket_factory, vet_url

__all__ = ["MediaFetchFailed", "MediaFetcher"]

log = logging.getLogger("qiao.egress")

MAX_BYTES = 20 * 1024 * 1024  # one image or document
MAX_TOTAL_BYTES = 50 * 1024 * 1024  # all media fetched for one request
MAX_ITEMS = 32  # remote images and documents in one request
REQUEST_TIMEOUT = 45.0  # seconds for all of one request's fetches
_CHUNK = 64 * 1024
_PDF = "application/pdf"


class MediaFetchFailed(InvalidRequest):
    code = "media_fetch_failed"


class _NotMedia(Exception):
    """The answer is not what a media part may be (status, type or size): for the debug log."""


class MediaFetcher:
    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        max_bytes: int = MAX_BYTES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        timeout: float = 15.0,
        max_items: int = MAX_ITEMS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._allow: tuple[Network, ...] = tuple(
            ipaddress.ip_network(a, strict=False) for a in allow
        )
        self._max = max_bytes
        self._max_total = max_total_bytes
        self._timeout = timeout
        self._max_items = max_items
        self._request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._failure = (
            "it is not reachable, not at an allowed address, or not a supported media type "
            f"(images: image/*, documents: {_PDF}; at most {max_bytes // 1024 // 1024} MiB "
            f"each and {max_total_bytes // 1024 // 1024} MiB per request; no redirects)"
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self._allow),
                socket_factory=guarded_socket_factory(self._allow),
                limit=32,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(
        self, url: str, *, document: bool = False, limit: int | None = None
    ) -> tuple[str, bytes]:
        """(media type, bytes) of ``url``: an image, or a PDF if ``document``; at most ``limit``
        bytes (never more than the per-item cap). Else :class:`MediaFetchFailed`."""
        limit = self._max if limit is None else min(limit, self._max)
        try:
            return await self._get(url, document, limit)
        except (Refused, _NotMedia, aiohttp.ClientError, TimeoutError) as exc:
            cause = getattr(exc, "os_error", None) or exc  # the guard's reason at connect time
            log.debug("media fetch of %r failed: %s: %s", url, type(cause).__name__, cause)
            raise MediaFetchFailed(
                f"could not fetch the media at {url[:500]!r}: {self._failure}"
            ) from None

    async def _get(self, url: str, document: bool, limit: int) -> tuple[str, bytes]:
        target = vet_url(url, self._allow)  # fetch this object: the host that was checked
        async with self._client().get(target, allow_redirects=False) as resp:
            if resp.status != 200:
                raise _NotMedia(f"HTTP {resp.status}")
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if not (media_type == _PDF if document else media_type.startswith("image/")):
                raise _NotMedia(f"type {media_type or 'none'}")
            if (resp.content_length or 0) > limit:
                raise _NotMedia(f"{resp.content_length} bytes announced, limit {limit}")
            body = bytearray()
            # content.read(n) returns what is buffered, not n bytes: read until the end.
            async for chunk in resp.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise _NotMedia(f"more than {limit} bytes")
        return media_type, bytes(body)

    async def inline(self, request: Request) -> None:
        """Replace every remote image or document in ``request`` by its bytes, within the
        per-request caps: bytes in all, how many, and how long all of them may take (15 s each
        alone would let one request of many slow URLs hold a fetcher connection for minutes)."""
        remote = list(_remote_media(request))
        if len(remote) > self._max_items:
            raise MediaFetchFailed(
                f"A request may carry at most {self._max_items} image or document URLs for this "
                f"provider (it fetches them); this one has {len(remote)}. Send the bytes instead."
            )
        left = self._max_total
        try:
            async with asyncio.timeout(self._request_timeout):
                for item, url in remote:
                    media_type, data = await self.fetch(
                        url, document=isinstance(item, Document), limit=left
                    )
                    left -= len(data)
                    item.media_type = item.media_type or media_type
                    item.data = base64.b64encode(data).decode()
                    item.url = None
        except TimeoutError:
            log.debug("media fetches of one request took over %g s", self._request_timeout)
            raise MediaFetchFailed(
                f"Fetching this request's {len(remote)} image or document URLs took longer than "
                f"{self._request_timeout:g} s in all. Send the bytes instead."
            ) from None


def _remote_media(request: Request) -> Iterator[tuple[Image | Document, str]]:
    """The images and documents of ``request`` (tool results included) that are only a URL,
    with that URL."""
    for message in request.messages:
        for part in message.parts:
            for item in part.content if isinstance(part, ToolResult) else [part]:
                if isinstance(item, Image | Document) and item.url and not item.data:
                    if not item.url.startswith("data:"):  # the codec inlines those itself
                        yield item, item.url
