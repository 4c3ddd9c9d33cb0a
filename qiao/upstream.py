"""How bytes leave Qiao: the upstream transport seam.

A :class:`Transport` turns an :class:`UpstreamRequest` into an
:class:`UpstreamResponse` whose body is read incrementally. :class:`HttpTransport`
uses one pooled aiohttp session per provider; the mock provider has an
in-process transport. This is the only module that catches aiohttp and asyncio
exceptions and maps them to :mod:`qiao.errors`.

Five timeouts apply to every call (see :class:`qiao.config.Timeouts`): connect,
first byte (until response headers), idle (between body reads), total (the relay to
the client included) and write stall (a client that does not read). A caller key may
hold half of a provider's connection pool (:class:`PoolShare`).
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
from .errors import (
    ConnectionShareExceeded,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = [
    "CLOSE_GRACE",
    "Deadline",
    "HttpTransport",
    "PoolShare",
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
    owner: str | None = None  # the caller's key: its share of the provider's pool is capped


CLOSE_GRACE = 1.0
"""Seconds past the total deadline a relay may take to send its closing error event."""


class Deadline:
    """The clock of one upstream call, on both of its sides.

    Upstream: ``idle`` bounds each wait for the next chunk and ``total`` the whole call.
    Client: the relay runs inside :meth:`relay_scope`, which ends at the total deadline (plus
    a moment to send a closing error event), and a write the client does not take within
    ``write_stall`` cuts it at once. A client that stops reading stops the relay reading the
    upstream; without these bounds it would hold both connections for ever.

    One timer per call, not one per chunk: reads stamp ``last`` (when the wait for the
    upstream began), client writes set ``writing`` (when the write began, 0.0 when none is
    pending); when the timer fires it either re-arms or acts.
    """

    __slots__ = (
        "_handle",
        "_on_expire",
        "_scope",
        "_tick",
        "expired",
        "idle",
        "last",
        "loop",
        "stall",
        "total_at",
        "writing",
    )

    def __init__(self, timeouts: Timeouts) -> None:
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.total_at = self.last + timeouts.total
        self.idle = timeouts.idle
        self.stall = timeouts.write_stall
        self._tick = min(self.idle, self.stall)
        self.writing = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._on_expire: Callable[[UpstreamTimeout], None] | None = None
        self._scope: asyncio.Timeout | None = None
        self.expired: UpstreamTimeout | None = None

    def scope(self, first: float) -> asyncio.Timeout:
        """A timeout for one await that does not span a yield (headers, whole body)."""
        return asyncio.timeout_at(min(self.loop.time() + first, self.total_at))

    def relay_scope(self) -> asyncio.Timeout:
        """The scope every write to the client happens in: it expires at the total deadline
        (plus :data:`CLOSE_GRACE`), or at once when a write stalls."""
        self._scope = asyncio.timeout_at(self.total_at + CLOSE_GRACE)
        if self._handle is None:
            self._arm(self.loop.time())
        return self._scope

    def watch(self, on_expire: Callable[[UpstreamTimeout], None]) -> None:
        """Fail the upstream reader through ``on_expire`` when it waits too long."""
        self._on_expire = on_expire
        self.last = self.loop.time()
        if self._handle is None:
            self._arm(self.last)

    def unwatch(self) -> None:
        self._on_expire = None
        if self._scope is None:
            self.cancel()

    def _arm(self, now: float) -> None:
        if self.writing:
            when = self.writing + self.stall
        elif self._on_expire is not None:
            when = min(self.last + self.idle, self.total_at)
        elif self._scope is not None:
            when = now + self.stall  # between reads and writes: look again for a stalled write
        else:
            self._handle = None
            return
        # Look at least every min(idle, stall): the relay may switch sides before ``when``.
        self._handle = self.loop.call_at(min(when, now + self._tick), self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if self.writing and now - self.writing >= self.stall:
            self._handle = None
            if self._scope is not None:
                self._scope.reschedule(now)  # cancels the relay where it waits
            return
        on_expire = self._on_expire
        if not self.writing and on_expire is not None:
            if now >= self.total_at or now - self.last >= self.idle:
                self.expired = self.describe("idle")
                self._on_expire = None
                on_expire(self.expired)
        self._arm(now)

    def cancel(self) -> None:
        self._scope = None
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


class PoolShare:
    """Upstream calls in flight per caller key on one provider, each holding a connection of
    its pool: a key may hold ``cap`` of them (default half the pool), so one key cannot starve
    the others. A dict of counters: one lookup to take a slot, one to give it back."""

    __slots__ = ("cap", "held")

    def __init__(self, pool: int, cap: int | None = None) -> None:
        self.cap = max(1, min(pool, cap) if cap is not None else pool // 2)
        self.held: dict[str, int] = {}

    def take(self, owner: str) -> bool:
        n = self.held.get(owner, 0)
        if n >= self.cap:
            return False
        self.held[owner] = n + 1
        return True

    def give(self, owner: str) -> None:
        n = self.held[owner] - 1
        if n:
            self.held[owner] = n
        else:
            del self.held[owner]


class _HttpResponse:
    __slots__ = ("_deadline", "_provider", "_resp", "_share", "headers", "status")

    def __init__(
        self,
        resp: aiohttp.ClientResponse,
        deadline: Deadline,
        provider: str,
        share: tuple[PoolShare, str] | None,
    ) -> None:
        self._resp = resp
        self._deadline = deadline
        self._provider = provider
        self._share = share  # the pool slot this call holds, given back once
        self.status = resp.status
        self.headers = resp.headers

    def _give_back(self) -> None:
        if self._share is not None:
            pool, owner = self._share
            self._share = None
            pool.give(owner)

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
            self._give_back()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        d = self._deadline
        content = self._resp.content
        d.watch(content.set_exception)
        try:
            while True:
                d.last = d.loop.time()  # idle counts from here: not while the client is written
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except aiohttp.ClientError as exc:
            raise _map_client_error(exc, self._provider) from None
        finally:
            d.unwatch()

    def close(self) -> None:
        self._resp.close()
        self._give_back()


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

    def __init__(
        self,
        provider: str,
        *,
        max_connections: int,
        connect_timeout: float,
        per_key: int | None = None,
    ) -> None:
        self._provider = provider
        self._share = PoolShare(max_connections, per_key)
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
        share = self._take(request.owner)
        try:
            resp = await self._request(request, deadline)
        except BaseException:
            if share is not None:
                self._share.give(share[1])
            raise
        return _HttpResponse(resp, deadline, self._provider, share)

    def _take(self, owner: str | None) -> tuple[PoolShare, str] | None:
        """A slot of the pool for ``owner``'s call, or a 429 when it holds its share."""
        if owner is None:
            return None
        if not self._share.take(owner):
            raise ConnectionShareExceeded(
                f"This key already has {self._share.cap} calls in flight to provider "
                f"{self._provider!r}, its share of the connection pool; retry when one ends.",
                provider=self._provider,
                retry_after=1.0,
            )
        return self._share, owner

    async def _request(
        self, request: UpstreamRequest, deadline: Deadline
    ) -> aiohttp.ClientResponse:
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
        return resp

    async def close(self) -> None:
        await self._session.close()
