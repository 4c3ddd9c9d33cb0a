"""Bad input gets a clear 4xx in OpenAI's error shape, never a 500, over a real socket."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import orjson
import pytest
from conftest import CLIENT_KEY
from gateway import Gateway

from qiao.app import ENGINE
from qiao.storage.base import StorageUnavailable

CONFIG = f"""
providers:
  mock: {{type: mock}}
models:
  qiao-mock: [{{provider: mock}}]
keys:
  - {{name: tester, key: {CLIENT_KEY}}}
server:
  max_body_bytes: 4096
  header_timeout: 1.0
  body_timeout: 1.0
"""


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with Gateway(CONFIG) as g:
        yield g


def post(
    gw: Gateway,
    body: bytes,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    hdrs = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    hdrs.update(headers or {})
    conn.request("POST", path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, orjson.loads(data)


GOOD = {"model": "qiao-mock", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"", 400, None),
        (b"[1,2]", 400, None),
        (b'"just a string"', 400, None),
        (
            b'{"model": "qiao-mock", "messages": [{"role":"user","content":"hi"}], "temperature": NaN}',
            400,
            None,
        ),
        (b'{"model": "qiao-mock", "messages": [], "x": Infinity}', 400, None),
        (
            b'{"model": "qiao-mock", "model": "other", "messages": [{"role":"user","content":"hi"}]}',
            400,
            None,
        ),
        (b'{"model": "qiao-mock", "messages": [{"role":"user","content":"\\udc00"}]}', 400, None),
        (
            b'{"model": "qiao-mock", "messages": [{"role":"user","content":"\xed\xb0\x80"}]}',
            400,
            None,
        ),
        (orjson.dumps({**GOOD, "model": 42}), 400, "model"),
        (orjson.dumps({**GOOD, "model": ""}), 400, "model"),
        (orjson.dumps({"messages": GOOD["messages"]}), 400, "model"),
        (orjson.dumps({**GOOD, "messages": "hi"}), 400, "messages"),
        (orjson.dumps({**GOOD, "messages": ["hi"]}), 400, "messages"),
        (orjson.dumps({**GOOD, "stream": "yes"}), 400, "stream"),
        (orjson.dumps({**GOOD, "n": "2"}), 400, "n"),
        (orjson.dumps({**GOOD, "n": 0}), 400, "n"),
        (orjson.dumps({**GOOD, "model": "nope"}), 404, "model"),
        (b"x" * 5000, 413, None),
    ],
)
def test_bad_chat_bodies(gw: Gateway, body: bytes, status: int, param: str | None) -> None:
    got, headers, payload = post(gw, body)
    assert got == status
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    assert err["param"] == param
    assert headers["x-request-id"].startswith("req_")
    assert headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/embeddings", {"model": "qiao-mock"}, "input"),
        ("/v1/embeddings", {"model": "qiao-mock", "input": "a", "stream": True}, "stream"),
        ("/v1/completions", {"model": "qiao-mock"}, "prompt"),
        ("/v1/responses", {"input": "x"}, "model"),
    ],
)
def test_bad_bodies_other_endpoints(gw: Gateway, path: str, body: dict, param: str) -> None:
    status, _, payload = post(gw, orjson.dumps(body), path)
    assert status == 400 and payload["error"]["param"] == param


def test_good_request_still_works(gw: Gateway) -> None:
    status, headers, payload = post(gw, orjson.dumps(GOOD))
    assert status == 200 and payload["choices"][0]["message"]["content"]
    assert headers["x-qiao-provider"] == "mock"


def test_unknown_url_and_method(gw: Gateway) -> None:
    status, _, payload = post(gw, b"{}", "/v1/nope")
    assert status == 404 and payload["error"]["message"] == "Invalid URL (POST /v1/nope)"
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("GET", "/v1/chat/completions")
    assert conn.getresponse().status == 404


def test_auth_checked_before_body(gw: Gateway) -> None:
    status, _, payload = post(gw, b"{not json", headers={"Authorization": "Bearer wrong-key-xx"})
    assert status == 401 and payload["error"]["code"] == "invalid_api_key"
    status, _, payload = post(gw, orjson.dumps(GOOD), headers={"Authorization": ""})
    assert status == 401 and payload["error"]["code"] == "missing_api_key"


def test_chunked_body_over_limit_is_413(gw: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=iter([b"x" * 3000, b"y" * 3000]),
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        encode_chunked=True,
    )
    resp = conn.getresponse()
    assert resp.status == 413
    assert orjson.loads(resp.read())["error"]["code"] == "request_too_large"


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def test_slowloris_headers_are_cut_off(gw: Gateway) -> None:
    s = _raw(gw.port)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    closed = False
    while time.monotonic() - t0 < 5:
        try:
            s.sendall(b"X-Slow: 1\r\n")
        except OSError:
            closed = True
            break
        s.settimeout(0.3)
        try:
            if s.recv(1024) == b"":
                closed = True
                break
        except TimeoutError:
            pass
    assert closed, "server kept a connection that never finished its headers"
    assert time.monotonic() - t0 < 3


def test_slow_body_gets_408(gw: Gateway) -> None:
    s = _raw(gw.port)
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        + f"Authorization: Bearer {CLIENT_KEY}\r\n\r\n".encode()
        + b'{"model":'
    )
    s.settimeout(5)
    t0 = time.monotonic()
    data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "",
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_non_json_content_types_are_415(gw: Gateway, content_type: str, path: str) -> None:
    # Browsers send these cross-origin without a CORS preflight.
    body = orjson.dumps({**GOOD, "max_tokens": 5})
    status, _, answer = post(gw, body, path, {"Content-Type": content_type})
    assert status == 415
    message = answer["error"]["message"]
    assert "Content-Type: application/json" in message
    if path == "/v1/messages":
        assert answer["type"] == "error"  # Anthropic's shape on Anthropic's route


def test_gemini_route_with_key_in_url_refuses_a_form_body(gw: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "POST",
        f"/v1beta/models/qiao-mock:generateContent?key={CLIENT_KEY}",
        body=b'{"contents": [{"parts": [{"text": "hi"}]}]}',
        headers={"Content-Type": "text/plain"},
    )
    resp = conn.getresponse()
    answer = orjson.loads(resp.read())
    conn.close()
    assert resp.status == 415 and answer["error"]["code"] == 415


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON"]
)
def test_json_content_types_are_served(gw: Gateway, content_type: str) -> None:
    status, _, _ = post(gw, orjson.dumps(GOOD), headers={"Content-Type": content_type})
    assert status == 200


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (RuntimeError("internal detail sk-not-for-callers"), 500, "internal_error"),
        (StorageUnavailable("db detail"), 503, "unavailable"),
    ],
)
def test_unexpected_errors_answer_in_the_callers_protocol(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, fault: Exception, status: int, code: str
) -> None:
    # Before: aiohttp's plain-text "500 Internal Server Error" (a budget ledger that was down
    # raised one), which no SDK can parse. Now the caller's own error shape, no internals.
    engine = gw.app[ENGINE]

    async def broken(*_: object, **__: object) -> None:
        raise fault

    monkeypatch.setattr(engine.gate, "admit", broken)
    got, headers, answer = post(gw, orjson.dumps(GOOD))
    assert got == status and answer["error"]["code"] == code
    assert "detail" not in orjson.dumps(answer).decode()
    assert headers["x-request-id"]
    anthropic_body = orjson.dumps({**GOOD, "max_tokens": 5})
    got, _, answer = post(gw, anthropic_body, "/v1/messages")
    assert got in (status, 529) and answer["type"] == "error"
