"""The SSRF guard, and remote media fetching for Gemini upstreams through it.

Two loopback canaries record every request they get: ``allowed`` on 127.0.0.1 (in the gateway's
``media_fetch_allow``) and ``canary`` on 127.0.0.2 (not allowed). Every spelling of a refused
address must leave the canary untouched and get the one generic message.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import quote

import aiohttp
import openai
import pytest
from aiohttp import web
from conftest import CLIENT_KEY
from fakes.cloud import Loopback
from fakes.gemini_upstream import FakeGemini
from gateway import Gateway
from openai.types.chat import ChatCompletionContentPartParam

from qiao.canonical import Image, Message, Request
from qiao.egress.fetch import MediaFetcher, MediaFetchFailed
from qiao.egress.ssrf import (
    GuardedResolver,
    Refused,
    check_address,
    guarded_socket_factory,
    vet_url,
)

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001")
BIG = PNG + bytes(range(256)) * (8 * 1024)  # 2 MiB and a little
PDF = b"%PDF-1.4\n%%EOF\n"
GENERIC = "it is not reachable, not at an allowed address, or not a supported media type"


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::7f00:1",  # IPv4-compatible (::/96)
        "::a9fe:a9fe",
        "::ffff:0:7f00:1",  # IPv4-translated (::ffff:0:0:0/96)
        "::ffff:0:a9fe:a9fe",
        "64:ff9b::7f00:1",  # NAT64 well-known prefix
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::7f00:1",  # local-use NAT64, any layout
        "64:ff9b:1:808:8:800::",
        "2002:7f00:1::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fd00:ec2::254",
    ],
)
def test_private_and_metadata_addresses_refused(addr: str) -> None:
    with pytest.raises(Refused):
        check_address(ipaddress.ip_address(addr))


@pytest.mark.parametrize(
    "addr",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "::ffff:0:808:808",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses_pass(addr: str) -> None:
    check_address(ipaddress.ip_address(addr))


def test_allowlist_opens_a_network_but_never_metadata() -> None:
    ten, loop = ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8")
    check_address(ipaddress.ip_address("10.1.2.3"), [ten])
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), [loop])  # judged by its IPv4
    with pytest.raises(Refused):
        check_address(ipaddress.ip_address("127.0.0.1"), [ten])
    with pytest.raises(Refused):
        check_address(
            ipaddress.ip_address("169.254.169.254"), [ipaddress.ip_network("169.254.0.0/16")]
        )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/a.png",
        "file:///etc/passwd",
        "http://user:pw@host/a.png",
        "http://user@host/a.png",
        "http:///a.png",
        "gopher://x",
        "http://[::1",
        "http://h:99999/",
        "http://127.0.0.1/x",
        "http://１２７.０.０.１/x",
        "http://127。0。0。1/x",
        "http://⑫⑦.0.0.1/x",
        "http://127.0.0.1./x",
        "http://[::ffff:7f00:1]/x",
        "http://169.254.169.254/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://1.2.3.4.5/",
        "http://[fe80::1%25eth0]/",
        "http://%31%32%37.0.0.1/",
        "http://a b/",
    ],
)
def test_refused_before_any_connection(url: str) -> None:
    with pytest.raises(Refused):
        vet_url(url)


def test_vetted_url_is_what_the_client_connects_to() -> None:
    assert vet_url("http://bücher.example/a.png").raw_host == "xn--bcher-kva.example"
    assert vet_url("HTTPS://Images.Example./a.png").raw_host == "images.example."
    assert vet_url("http://１２７.０.０.１/x", [ipaddress.ip_network("127.0.0.1/32")]).raw_host == (
        "127.0.0.1"
    )


# -------------------------------------------------------------------------- loopback canaries


def _media_app() -> web.Application:
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def pdf(request: web.Request) -> web.Response:
        return web.Response(body=PDF, content_type="application/pdf")

    async def text(request: web.Request) -> web.Response:  # what a metadata service answers
        return web.Response(text="AKIAEXAMPLE secret", content_type="text/plain")

    async def json(request: web.Request) -> web.Response:
        return web.json_response({"Code": "Success", "AccessKeyId": "AKIAEXAMPLE"})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def slow(request: web.Request) -> web.StreamResponse:
        """BIG in 64 KiB chunks with pauses: more than one read's worth of buffer."""
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BIG), 64 * 1024):
            await resp.write(BIG[i : i + 64 * 1024])
            await asyncio.sleep(0.005)
        await resp.write_eof()
        return resp

    app = web.Application()
    for path, handler in {
        "/cat.png": png,
        "/doc.pdf": pdf,
        "/creds": text,
        "/meta.json": json,
        "/slow.png": slow,
        "/redirect": redirect,
    }.items():
        app.router.add_get(path, handler)
    return app


def _canary(host: str) -> Iterator[Loopback]:
    app = _media_app()
    server = Loopback(app, host)

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        server.seen.append({"path": request.path_qs})
        return await handler(request)

    app.middlewares.append(record)
    with server:
        yield server


@pytest.fixture(scope="module")
def allowed_server() -> Iterator[Loopback]:
    yield from _canary("127.0.0.1")


@pytest.fixture(scope="module")
def canary_server() -> Iterator[Loopback]:
    yield from _canary("127.0.0.2")


@pytest.fixture
def allowed(allowed_server: Loopback) -> Loopback:
    allowed_server.seen.clear()
    return allowed_server


@pytest.fixture
def canary(canary_server: Loopback) -> Loopback:
    canary_server.seen.clear()
    return canary_server


@pytest.fixture(scope="module")
def gemini() -> Iterator[FakeGemini]:
    with FakeGemini(api_key="AIza-ssrf-0123456789") as f:
        yield f


def _config(gemini: FakeGemini, allow: str = "") -> str:
    return f"""
providers:
  g: {{type: gemini, base_url: "{gemini.url}", api_key: AIza-ssrf-0123456789}}
models: {{g: [{{provider: g, model: gemini-2.5-flash}}]}}
keys: [{{name: t, key: {CLIENT_KEY}}}]
server: {{media_fetch_allow: [{allow}]}}
"""


@pytest.fixture(scope="module")
def gw(gemini: FakeGemini) -> Iterator[Gateway]:
    """A gateway that may fetch from 127.0.0.1 only."""
    with Gateway(_config(gemini, '"127.0.0.1/32"')) as g:
        yield g


@pytest.fixture(scope="module")
def strict_gw(gemini: FakeGemini) -> Iterator[Gateway]:
    """A gateway that may fetch from public addresses only."""
    with Gateway(_config(gemini)) as g:
        yield g


def _ask(gw: Gateway, *urls: str) -> str:
    client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    content: list[ChatCompletionContentPartParam] = [{"type": "text", "text": "what"}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    r = client.chat.completions.create(model="g", messages=[{"role": "user", "content": content}])
    return r.choices[0].message.content or ""


def _refusal(gw: Gateway, gemini: FakeGemini, url: str) -> str:
    """The message of the 400 the gateway answers for ``url``, checked to be the generic one in
    OpenAI's error format; nothing went upstream."""
    gemini.reset()
    with pytest.raises(openai.BadRequestError) as exc:
        _ask(gw, url)
    error = exc.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "media_fetch_failed"
    message: str = error["message"]
    assert message.startswith(f"could not fetch the media at {url!r}: {GENERIC}")
    for leak in ("HTTP", "302", "text/plain", "json", "Connect", "Error", "public", "AKIA"):
        assert leak not in message.removeprefix(f"could not fetch the media at {url!r}")
    assert gemini.requests == []
    return message


ENCODINGS_OF_127_0_0_2 = [
    "127.0.0.2:{port}",
    "１２７.０.０.２:{port}",  # full-width digits and dots
    "127。0。0。2:{port}",  # ideographic full stops
    "127．0．0．2:{port}",  # full-width full stops
    "⑫⑦.0.0.2:{port}",  # circled numbers
    "2130706434:{port}",  # decimal
    "0177.0.0.2:{port}",  # octal
    "0x7f.0.0.2:{port}",  # hex
    "0x7f000002:{port}",
    "127.2:{port}",  # short form
    "127.0.0.2.:{port}",  # trailing dot
    "[::ffff:127.0.0.2]:{port}",  # IPv4-mapped
    "[::7f00:2]:{port}",  # IPv4-compatible
    "[::ffff:0:7f00:2]:{port}",  # IPv4-translated
    "[64:ff9b::7f00:2]:{port}",  # NAT64
    "[64:ff9b:1::7f00:2]:{port}",  # local-use NAT64
    "[2002:7f00:2::1]:{port}",  # 6to4
    "u:p@127.0.0.2:{port}",
]


@pytest.mark.parametrize("host", ENCODINGS_OF_127_0_0_2)
def test_every_spelling_of_a_refused_address_is_refused(
    gw: Gateway, gemini: FakeGemini, canary: Loopback, host: str
) -> None:
    _refusal(gw, gemini, f"http://{host.format(port=canary.port)}/cat.png")
    assert canary.seen == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "１２７.０.０.１", "localhost", "localhost.", "[::1]", "[::ffff:7f00:1]"]
)
def test_loopback_is_refused_unless_allowed(
    strict_gw: Gateway, gemini: FakeGemini, allowed: Loopback, host: str
) -> None:
    _refusal(strict_gw, gemini, f"http://{host}:{allowed.port}/cat.png")
    assert allowed.seen == []


def test_credentials_in_the_url_are_refused(
    gw: Gateway, gemini: FakeGemini, allowed: Loopback
) -> None:
    _refusal(gw, gemini, f"http://u:p@127.0.0.1:{allowed.port}/cat.png")
    assert allowed.seen == []


def test_metadata_url_is_refused(gw: Gateway, gemini: FakeGemini) -> None:
    _refusal(gw, gemini, "http://169.254.169.254/latest/meta-data/iam")


def test_redirects_are_not_followed(
    gw: Gateway, gemini: FakeGemini, allowed: Loopback, canary: Loopback
) -> None:
    to = f"{canary.url}/cat.png"
    _refusal(gw, gemini, f"{allowed.url}/redirect?to={quote(to)}")
    assert [s["path"] for s in allowed.seen] == [f"/redirect?to={to}"]
    assert canary.seen == []


@pytest.mark.parametrize("path", ["/creds", "/meta.json", "/missing.png", "/doc.pdf"])
def test_what_an_allowed_address_answered_is_not_revealed(
    gw: Gateway, gemini: FakeGemini, allowed: Loopback, path: str
) -> None:
    """Text, JSON, a 404 and a PDF given as an image: one message, no detail, nothing inlined."""
    _refusal(gw, gemini, f"{allowed.url}{path}")
    assert [s["path"] for s in allowed.seen] == [path]


def test_allowed_network_is_fetched_and_inlined(
    gw: Gateway, gemini: FakeGemini, allowed: Loopback
) -> None:
    gemini.reset()
    assert _ask(gw, f"{allowed.url}/cat.png") == "echo: what"
    part = gemini.last_request.json["contents"][0]["parts"][1]
    assert part["inlineData"] == {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}


def test_a_slow_chunked_image_arrives_whole(
    gw: Gateway, gemini: FakeGemini, allowed: Loopback
) -> None:
    gemini.reset()
    assert _ask(gw, f"{allowed.url}/slow.png") == "echo: what"
    part = gemini.last_request.json["contents"][0]["parts"][1]
    assert base64.b64decode(part["inlineData"]["data"]) == BIG


# ------------------------------------------------------------------ the fetcher, in process


@pytest.mark.parametrize(
    "host", ["127.0.0.2", "１２７.０.０.２", "[::ffff:127.0.0.2]", "localhost", "0x7f.0.0.2"]
)
def test_the_connector_alone_refuses_a_private_peer(canary: Loopback, host: str) -> None:
    """Without vet_url: whatever a URL parser makes of the host, the connection is refused."""

    async def get() -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(), socket_factory=guarded_socket_factory()
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            await session.get(f"http://{host}:{canary.port}/cat.png")

    with pytest.raises(aiohttp.ClientConnectorError) as exc:
        asyncio.run(get())
    assert isinstance(exc.value.os_error, Refused)
    assert canary.seen == []


def _fetch_all(fetcher: MediaFetcher, *urls: str) -> list[Image]:
    """The images of ``urls``, inlined by ``fetcher``."""
    images = [Image(url=u) for u in urls]
    request = Request(model="m", messages=[Message("user", [*images])])

    async def run() -> None:
        try:
            await fetcher.inline(request)
        finally:
            await fetcher.close()

    asyncio.run(run())
    return images


def test_the_total_per_request_is_capped(allowed: Loopback) -> None:
    url = f"{allowed.url}/slow.png"
    mib = 1024 * 1024
    done = _fetch_all(MediaFetcher(["127.0.0.1/32"], max_total_bytes=5 * mib), url, url)
    assert [base64.b64decode(image.data or "") for image in done] == [BIG, BIG]
    with pytest.raises(MediaFetchFailed):
        _fetch_all(MediaFetcher(["127.0.0.1/32"], max_total_bytes=3 * mib), url, url)
    assert len(allowed.seen) == 4


@pytest.mark.parametrize(
    ("path", "cap"),
    [("/slow.png", 1024 * 1024), ("/cat.png", len(PNG) - 1)],  # chunked; with Content-Length
)
def test_one_item_over_the_cap_is_refused(allowed: Loopback, path: str, cap: int) -> None:
    with pytest.raises(MediaFetchFailed):
        _fetch_all(MediaFetcher(["127.0.0.1/32"], max_bytes=cap), f"{allowed.url}{path}")


def test_documents_must_be_pdf_and_images_images(allowed: Loopback) -> None:
    async def fetch(path: str, document: bool) -> bytes:
        fetcher = MediaFetcher(["127.0.0.1/32"])
        try:
            return (await fetcher.fetch(f"{allowed.url}{path}", document=document))[1]
        finally:
            await fetcher.close()

    assert asyncio.run(fetch("/doc.pdf", True)) == PDF
    for path, document in [("/cat.png", True), ("/creds", True), ("/doc.pdf", False)]:
        with pytest.raises(MediaFetchFailed):
            asyncio.run(fetch(path, document))


def test_the_number_of_urls_per_request_is_capped(allowed: Loopback) -> None:
    url = f"{allowed.url}/cat.png"
    with pytest.raises(MediaFetchFailed, match="at most 2"):
        _fetch_all(MediaFetcher(["127.0.0.1/32"], max_items=2), url, url, url)
    assert allowed.seen == []  # refused before any fetch
    assert len(_fetch_all(MediaFetcher(["127.0.0.1/32"], max_items=2), url, url)) == 2


def test_all_fetches_of_a_request_share_one_deadline(allowed: Loopback) -> None:
    # Each slow.png takes at least 32 x 5 ms of the server's own pauses, so five take 0.8 s or
    # more whatever the machine: past a 0.3 s deadline for the request, under 15 s each.
    url = f"{allowed.url}/slow.png"
    fetcher = MediaFetcher(["127.0.0.1/32"], request_timeout=0.3)
    with pytest.raises(MediaFetchFailed, match=r"longer than 0\.3 s"):
        _fetch_all(fetcher, *[url] * 5)
