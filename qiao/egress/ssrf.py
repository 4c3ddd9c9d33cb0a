"""The SSRF guard for every user-influenced URL.

Two layers, so that no difference between how this module and the HTTP client read a URL can
slip a private address through:

* :func:`vet_url` parses the URL with yarl, the HTTP client's own URL library, and checks the
  host yarl produced — the very host aiohttp will connect to. (``urlsplit`` once saw the name
  ``１２７.０.０.１`` where yarl, by IDNA mapping, saw the IP literal ``127.0.0.1``.) It refuses
  non-http(s) schemes, credentials, host names that are not plain DNS names, and the legacy
  IPv4 spellings ``getaddrinfo`` accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``).
  The caller must fetch the returned :class:`yarl.URL` object, never the string again.
* At connect time :class:`GuardedResolver` refuses a name if any of its addresses is not
  public, and :func:`guarded_socket_factory` refuses every peer address before its socket is
  created — IP literals included, which aiohttp connects to without asking the resolver.

An address is public when ``ipaddress`` calls it global and not multicast; IPv4 carried in IPv6
(mapped, compatible, translated, NAT64, 6to4) is judged by the IPv4 address it carries; the
local-use NAT64 prefix and Teredo are refused outright; cloud metadata addresses are refused even
when an operator's allowlist covers them. Refusals are :class:`Refused`, an ``OSError`` so the
connector treats one like any failed connect: no byte is ever sent to a refused address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from typing import Any

import yarl
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = [
    "GuardedResolver",
    "Network",
    "Refused",
    "check_address",
    "guarded_socket_factory",
    "vet_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 prefixes whose last 32 bits are an IPv4 address the packet ends up at (RFC 4291 mapped and
# compatible, RFC 2765 translated, RFC 6052 NAT64 well-known prefix). 6to4 and IPv4-mapped are
# unwrapped by ``ipaddress`` itself.
_CARRIERS = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# Not globally reachable (RFC 8215 local-use NAT64, whose IPv4 position depends on the operator's
# prefix length; Teredo), though this Python's ``is_global`` may say otherwise.
_NEVER = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "2001::/32"))
# Metadata endpoints reachable from cloud VMs; most are non-global anyway, named here so the
# refusal holds even if an allowlist includes their range.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.170.2")
)
# A DNS name as it reaches the resolver (yarl has IDNA-encoded it): anything else — "%31",
# spaces, NULs — is refused rather than handed to getaddrinfo to interpret.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
# WHATWG URL: a host whose last label is a number is an IPv4 address (in any base and length).
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


class Refused(OSError):
    """The guard refused a URL or an address. The text is for operators' logs only: callers get
    one generic message, so a refusal cannot be told from an unreachable host."""


def _judged(addr: IPAddress) -> IPAddress:
    """The address a connection to ``addr`` really reaches: the IPv4 inside a carrier."""
    if isinstance(addr, ipaddress.IPv4Address):
        return addr
    inner = addr.ipv4_mapped or addr.sixtofour
    if inner is not None:
        return inner
    if any(addr in net for net in _CARRIERS):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def check_address(addr: IPAddress, allow: Iterable[Network] = ()) -> None:
    """Raise :class:`Refused` unless ``addr`` is public or in an allowed network."""
    target = _judged(addr)
    if addr in _METADATA or target in _METADATA:
        raise Refused(f"{addr} is a cloud metadata address")
    if any(target in net for net in allow):
        return
    if not target.is_global or target.is_multicast or any(target in net for net in _NEVER):
        raise Refused(f"{addr} is not a public address")


def _literal(host: str) -> IPAddress | None:
    """The IP address ``host`` (yarl's ``raw_host``) spells, if it is an IP literal."""
    if ":" in host:
        try:  # a zone id ("%25eth0") only matters for link-local, which is refused anyway
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise Refused(f"{host!r} is not an IPv6 address") from None
    name = host.removesuffix(".")
    if not _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        return None
    try:
        return ipaddress.IPv4Address(name)
    except ValueError:
        raise Refused(f"{host!r} is an IPv4 address in a legacy form") from None


def vet_url(url: str, allow: Iterable[Network] = ()) -> yarl.URL:
    """The URL as the HTTP client will read it, if nothing about it needs refusing before DNS."""
    try:
        parsed = yarl.URL(url)
        host = parsed.raw_host
    except (ValueError, TypeError):
        raise Refused("not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise Refused("only http(s) URLs with a host are fetched")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise Refused("URLs with credentials are not fetched")
    host = host.lower()
    literal = _literal(host)
    if literal is not None:
        check_address(literal, allow)
    elif not _HOST_NAME.fullmatch(host):
        raise Refused(f"{host!r} is not a DNS name")
    return parsed


def guarded_socket_factory(
    allow: Iterable[Network] = (),
) -> Callable[[AddrInfoType], socket.socket]:
    """A ``TCPConnector(socket_factory=...)`` that refuses a non-public peer before its socket
    exists. aiohttp calls it for every connection it opens, whether the host was a name it
    resolved or an IP literal it did not."""
    networks = tuple(allow)

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        check_address(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]), networks)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses a name if any of its addresses is not public: a name
    that points inside is refused as a whole, not used through its one public address."""

    def __init__(self, allow: Iterable[Network] = ()) -> None:
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
            raise Refused(f"cannot resolve {host!r}") from None
        out: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            check_address(addr, self._allow)  # every address, or none
            out.append(_result(host, str(addr), port, fam, proto))
        if not out:
            raise Refused(f"cannot resolve {host!r}")
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
