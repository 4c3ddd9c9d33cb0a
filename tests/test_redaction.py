"""Provider keys never reach a client or /readyz, however the upstream writes them."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator

import openai
import orjson
import pytest
from aiohttp import web
from fakes.cloud import Loopback
from gateway import Gateway

from qiao.observability.redact import Redactor

UPSTREAM_KEY = "prov-Zq7w/9Yx+Kp3Lm8Vn2Bc5Df"  # base64-like: '/' is written '\/' by some servers
CLIENT = "sk-qiao-redaction-client-0123456789"
ADMIN = "sk-qiao-redaction-admin-0123456789abcdef"


def _escaped(secret: str, style: str) -> str:
    if style == "unicode":
        return "".join(f"\\u{ord(c):04x}" for c in secret)
    if style == "slash":
        return secret.replace("/", "\\/")
    return "\\u" + f"{ord(secret[0]):04x}" + secret[1:].replace("/", "\\/")  # mixed


class EchoUpstream(Loopback):
    """Answers every call with HTTP 400 whose JSON message quotes the key in ``style``."""

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        super().__init__(app)
        self.style = "unicode"
        self.truncate = False

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        quoted = _escaped(UPSTREAM_KEY, self.style)
        body = '{"error": {"message": "Incorrect API key provided: ' + quoted + '", "type": "x"}}'
        if self.truncate:  # not JSON any more: the redactor must still see through escapes
            body = body[: body.index('", "type')] + " " + "y" * 70_000
        return web.Response(status=400, text=body, content_type="application/json")


@pytest.fixture(scope="module")
def up() -> Iterator[EchoUpstream]:
    with EchoUpstream() as u:
        yield u


@pytest.fixture(scope="module")
def gw(up: EchoUpstream) -> Iterator[Gateway]:
    config = f"""
admin_key: {ADMIN}
providers:
  p: {{type: openai, base_url: "http://127.0.0.1:{up.port}/v1", api_key: "{UPSTREAM_KEY}"}}
models: {{m: [{{provider: p}}]}}
keys: [{{name: c, key: {CLIENT}}}]
"""
    with Gateway(config) as g:
        yield g


def _get(gw: Gateway, path: str, key: str | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
    data = conn.getresponse().read()
    conn.close()
    return data


def _exposed(text: str) -> bool:
    decoded = text.replace("\\/", "/")
    for part in (UPSTREAM_KEY, UPSTREAM_KEY[5:20], "Zq7w"):
        if part in decoded or part in text:
            return True
    return "\\u0070\\u0072" in text or "\\u0070rov" in text


@pytest.mark.parametrize("style", ["unicode", "slash", "mixed"])
@pytest.mark.parametrize("truncate", [False, True])
def test_escaped_key_never_reaches_the_client(
    gw: Gateway, up: EchoUpstream, style: str, truncate: bool
) -> None:
    up.style, up.truncate = style, truncate
    client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    raw = info.value.response.text
    if not truncate:  # the upstream's own message still comes through
        assert "Incorrect API key provided" in raw
    assert not _exposed(raw), raw[:300]
    assert not _exposed(str(orjson.loads(raw)))

    public = _get(gw, "/readyz").decode()
    assert orjson.loads(public)["degraded"]["p"] == "upstream_status_400"
    assert "Incorrect" not in public and not _exposed(public)
    operator = _get(gw, "/readyz", ADMIN).decode()
    assert "upstream_status_400:" in operator and not _exposed(operator)
    if not truncate:
        assert "Incorrect API key provided" in operator
    assert "Incorrect" not in _get(gw, "/readyz", CLIENT).decode()  # a user key is not enough


def test_redactor_body_keeps_json_valid() -> None:
    r = Redactor(["secret-value-123"])
    body = b'{"m": "k=\\u0073ecret-value-123!", "n": [1, "\\u00e9"]}'
    out = orjson.loads(r.body(body))
    assert out == {"m": "k=[redacted]!", "n": [1, "é"]}
    untouched = b'{"m": "nothing \\u00e9 here"}'
    assert r.body(untouched) == untouched


def test_redactor_is_linear_on_long_runs() -> None:
    # The masked-echo pattern once scanned every suffix of a run of letters (quadratic): an
    # upstream error body of 64 KiB held the event loop for a minute. 400,000 letters would
    # take hours that way; the work runs in a thread so a regression fails at the ceiling.
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(Redactor(["abcd1234"])("y" * 400_000)))
    worker.daemon = True
    worker.start()
    worker.join(timeout=60)
    assert done == ["y" * 400_000]
