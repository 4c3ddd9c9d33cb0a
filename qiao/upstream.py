"""How bytes leave Qiao: the upstream transport seam.

A :class:`Transport` turns an :class:`UpstreamRequest` into an
:class:`UpstreamResponse` whose body is read incrementally. :class:`HttpTransport`
uses one pooled aiohttp session per provider; the mock provider has an
in-process transport. This is the only module that catches aiohttp and asyncio
exceptions and maps them to :mod:`qiao.errors`.

Four timeouts apply to every call (see :class:`qiao.config.Timeouts`): connect,
first byte (until response headers), idle (between body reads) and total.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from .config import Timeouts
from .errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

__all__ = [
    "Deadline",
    "HttpTransport",
    "Transport",
    "UpstreamRequest",
    "UpstreamResponse",
]


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    provider: str
    stream: bool = False
    timeouts: Timeouts = field(default_factory=lambda: Timeouts())


class Deadline:
    """The total and idle timeouts of one upstream call.

    Idle time is watched by one timer per call, not one per chunk: reads only
    stamp ``last``; when the timer fires it either re-arms or fails the stream.
    """

    __slots__ = ("_handle", "_on_expire", "expired", "idle", "last", "loop", "total_at")

    def __init__(self, timeouts: Timeouts) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.total_at = self.last + timeouts.total
        self.idle = timeouts.idle
        self._handle: asyncio.TimerHandle | None = None
        self._on_expire: Callable[[UpstreamTimeout], None] | None = None
        self.expired: UpstreamTimeout | None = None

    def scope(self, first: float) -> asyncio.Timeout:
        """A timeout for one await that does not span a yield (headers, whole body)."""
        return asyncio.timeout_at(min(self.loop.time() + first, self.total_at))

    def watch(self, on_expire: Callable[[UpstreamTimeout], None]) -> None:
        self._on_expire = on_expire
        self.last = self.loop.time()
        self._arm()

    def _arm(self) -> None:
        self._handle = self.loop.call_at(min(self.last + self.idle, self.total_at), self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if now < self.total_at and now - self.last < self.idle:
            self._arm()
            return
        self.expired = self.describe("idle")
        if self._on_expire is not None:
            self._on_expire(self.expired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def describe(self, phase: str) -> UpstreamTimeout:
        if self.loop.time() >= self.total_at - 0.001:
            return UpstreamTimeout("upstream exceeded the total timeout")
        return UpstreamTimeout(f"upstream {phase} timeout")


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> CIMultiDictProxy[str] | CIMultiDict[str]: ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Transport(Protocol):
    async def send(self, request: UpstreamRequest, deadline: Deadline) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class _HttpResponse:
    __slots__ = ("_deadline", "_provider", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, deadline: Deadline, provider: str) -> None:
        self._resp = resp
        self._deadline = deadline
        self._provider = provider
        self.status = resp.status
        self.headers = resp.headers

    async def read(self) -> bytes:
        d = self._deadline
        try:
            async with asyncio.timeout_at(d.total_at):
                return await self._resp.read()
        except TimeoutError:
            raise d.describe("idle") from None
        except aiohttp.ClientError as exc:
            raise _map_client_error(exc, self._provider) from None
        finally:
            self._resp.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        d = self._deadline
        content = self._resp.content
        d.watch(content.set_exception)
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                d.last = d.loop.time()
                yield chunk
        except aiohttp.ClientError as exc:
            raise _map_client_error(exc, self._provider) from None
        finally:
            d.cancel()

    def close(self) -> None:
        self._resp.close()


def _map_client_error(exc: BaseException, provider: str) -> UpstreamError:
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError):
        err: UpstreamError = UpstreamConnectError(f"cannot reach upstream: {type(exc).__name__}")
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        err = UpstreamProtocolError(f"upstream connection broke: {type(exc).__name__}")
    elif isinstance(exc, aiohttp.ServerTimeoutError):
        err = UpstreamTimeout("upstream connect timeout")
    else:
        err = UpstreamConnectError(f"upstream transport error: {type(exc).__name__}")
    err.provider = provider
    return err


class HttpTransport:
    """One pooled aiohttp session for one provider."""

    def __init__(self, provider: str, *, max_connections: int, connect_timeout: float) -> None:
        self._provider = provider
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=max_connections,
            ttl_dns_cache=300,
            family=socket.AF_UNSPEC,
            keepalive_timeout=30,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_connect=connect_timeout
            ),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            trust_env=False,
        )

    async def send(self, request: UpstreamRequest, deadline: Deadline) -> UpstreamResponse:
        try:
            async with deadline.scope(request.timeouts.first_byte):
                resp = await self._session.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    data=request.body,
                    allow_redirects=False,
                )
        except aiohttp.ServerTimeoutError:
            raise UpstreamTimeout("upstream connect timeout", provider=self._provider) from None
        except TimeoutError:
            raise deadline.describe("first byte") from None
        except aiohttp.ClientError as exc:
            raise _map_client_error(exc, self._provider) from None
        except OSError as exc:
            err = UpstreamConnectError(f"cannot reach upstream: {type(exc).__name__}")
            err.provider = self._provider
            raise err from None
        return _HttpResponse(resp, deadline, self._provider)

    async def close(self) -> None:
        await self._session.close()
