"""The SSRF guard, and remote image fetching for Gemini upstreams through it."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterator

import openai
import pytest
from aiohttp import web
from conftest import CLIENT_KEY
from fakes.cloud import Loopback
from fakes.gemini_upstream import FakeGemini
from gateway import Gateway

from qiao.egress.ssrf import UnsafeURL, check_address, check_url

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001")


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
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "fd00:ec2::254",
    ],
)
def test_private_and_metadata_addresses_refused(addr: str) -> None:
    with pytest.raises(UnsafeURL):
        check_address(ipaddress.ip_address(addr))


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(addr: str) -> None:
    check_address(ipaddress.ip_address(addr))


def test_allowlist_opens_a_network_but_never_metadata() -> None:
    check_address(ipaddress.ip_address("10.1.2.3"), [ipaddress.ip_network("10.0.0.0/8")])
    with pytest.raises(UnsafeURL):
        check_address(
            ipaddress.ip_address("169.254.169.254"), [ipaddress.ip_network("169.254.0.0/16")]
        )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/a.png",
        "file:///etc/passwd",
        "http://user:pw@host/a.png",
        "http:///a.png",
        "gopher://x",
        "http://[::1",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url)


@pytest.fixture(scope="module")
def images() -> Iterator[Loopback]:
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    app = web.Application()
    app.router.add_get("/cat.png", png)
    app.router.add_get("/redirect.png", redirect)
    with Loopback(app) as server:
        yield server


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


def _ask(gw: Gateway, url: str) -> str:
    client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    r = client.chat.completions.create(
        model="g",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    )
    return r.choices[0].message.content or ""


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_loopback_image_url_is_refused(gemini: FakeGemini, images: Loopback, host: str) -> None:
    gemini.reset()
    with Gateway(_config(gemini)) as gw, pytest.raises(openai.BadRequestError) as exc:
        _ask(gw, f"http://{host}:{images.port}/cat.png")
    assert exc.value.code == "unsafe_url"
    assert gemini.requests == []


def test_metadata_url_is_refused(gemini: FakeGemini) -> None:
    with Gateway(_config(gemini)) as gw, pytest.raises(openai.BadRequestError) as exc:
        _ask(gw, "http://169.254.169.254/latest/meta-data/iam")
    assert exc.value.code == "unsafe_url"


def test_allowed_network_is_fetched_and_inlined(gemini: FakeGemini, images: Loopback) -> None:
    gemini.reset()
    with Gateway(_config(gemini, '"127.0.0.0/8"')) as gw:
        assert _ask(gw, f"{images.url}/cat.png") == "echo: what"
        part = gemini.last_request.json["contents"][0]["parts"][1]
        assert part["inlineData"] == {
            "mimeType": "image/png",
            "data": base64.b64encode(PNG).decode(),
        }
        with pytest.raises(openai.BadRequestError) as exc:
            _ask(gw, f"{images.url}/redirect.png")  # redirects are not followed
        assert "302" in exc.value.message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::ffff:7f00:1]/x",
        "http://169.254.169.254/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://[fe80::1%25eth0]/",
    ],
)
def test_ip_literal_hosts_are_checked_without_dns(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url)
