"""The SSRF guard for every user-influenced URL.

A URL from a request (an image to fetch, say) is resolved once; every address it resolves to
must be public (``ipaddress`` ``is_global``, with IPv4 inside IPv6 — mapped, 6to4, NAT64,
Teredo — unwrapped first, and cloud metadata addresses refused by name). The connection is
then made to the vetted address itself (the check and the connect use the same resolution, so
DNS rebinding cannot slip a private address in between), redirects are not followed, and the
body is size-capped. Operators may allow extra networks (an intranet image host) explicitly.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from ..errors import InvalidRequest

__all__ = ["GuardedResolver", "UnsafeURL", "check_address", "check_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Metadata endpoints that are reachable from cloud VMs; most are non-global anyway, named here
# so the refusal holds even if an allowlist includes their range.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.170.2")
)


class UnsafeURL(InvalidRequest):
    code = "unsafe_url"


def _embedded_v4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def check_address(
    addr: IPAddress, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> None:
    inner = _embedded_v4(addr)
    for a in (addr, inner) if inner is not None else (addr,):
        if a in _METADATA:
            raise UnsafeURL(f"refusing to fetch from {a}: a cloud metadata address")
        if any(a in net for net in allow):
            continue
        if not a.is_global or a.is_multicast:
            raise UnsafeURL(f"refusing to fetch from {a}: not a public address")


def check_url(
    url: str, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()
) -> tuple[str, int]:
    """Checks that need no DNS — scheme, credentials, and the address itself when the host is
    an IP literal (aiohttp connects to those without asking the resolver); returns (host, port).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeURL("not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURL("only http(s) URLs with a host can be fetched")
    if parts.username or parts.password:
        raise UnsafeURL("URLs with credentials are not fetched")
    host = parts.hostname
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, allow)
    elif host.rstrip(".").isdigit() or host.lower().startswith("0x"):
        raise UnsafeURL("numeric host names are not fetched")  # e.g. http://2130706433/
    return host, port or (443 if parts.scheme == "https" else 80)


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses hosts resolving to any non-public address."""

    def __init__(self, allow: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = ()) -> None:
        self._allow = tuple(allow)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, family=socket.AF_UNSPEC
            )
        except socket.gaierror:
            raise UnsafeURL(f"cannot resolve {host!r}") from None
        out: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            check_address(addr, self._allow)  # every address, or none
            out.append(_result(host, str(addr), port, fam, proto))
        if not out:
            raise UnsafeURL(f"cannot resolve {host!r}")
        return out

    async def close(self) -> None:
        pass


def _result(host: str, addr: str, port: int, family: int, proto: int) -> ResolveResult:
    result: Any = {
        "hostname": host,
        "host": addr,
        "port": port,
        "family": family,
        "proto": proto,
        "flags": socket.AI_NUMERICHOST,
    }
    return result  # type: ignore[no-any-return]
