from __future__ import annotations

import http.client

import orjson
from gateway import Gateway

import qiao


def test_public_api_is_explicit() -> None:
    assert qiao.__all__ == ["__version__"]
    assert all(hasattr(qiao, name) for name in qiao.__all__)


def _get(gw: Gateway, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, orjson.loads(resp.read())


def test_health_and_readiness(mock_gateway: Gateway) -> None:
    assert _get(mock_gateway, "/healthz") == (200, {"status": "alive"})
    status, body = _get(mock_gateway, "/readyz")
    assert status == 200 and body["status"] == "ready" and body["providers"] == ["mock"]


def test_readiness_reports_a_failing_provider() -> None:
    config = """
providers:
  down: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-x, timeouts: {connect: 1}}
models: {m: [{provider: down}]}
keys: [{name: k, key: sk-readiness-key}]
"""
    with Gateway(config) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
            headers={"Authorization": "Bearer sk-readiness-key"},
        )
        assert conn.getresponse().status == 502
        status, body = _get(gw, "/readyz")
        assert status == 200 and body["status"] == "degraded" and "down" in body["degraded"]


def test_head_root(mock_gateway: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", mock_gateway.port, timeout=5)
    conn.request("HEAD", "/")
    assert conn.getresponse().status == 200


def test_cors_only_for_configured_origins() -> None:
    config = """
providers: {m: {type: mock}}
models: {m: [{provider: m}]}
keys: [{name: k, key: sk-cors-test-key}]
server: {cors_origins: ["https://chat.example.com"]}
"""
    with Gateway(config) as gw:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
        conn.request(
            "OPTIONS",
            "/v1/chat/completions",
            headers={
                "Origin": "https://chat.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
            },
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 204
        assert (
            resp.getheader("Access-Control-Allow-Headers")
            == "authorization, content-type, x-stainless-os"
        )
        assert resp.getheader("Access-Control-Allow-Origin") == "https://chat.example.com"
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=b'{"model":"m","messages":[{"role":"user","content":"x"}]}',
            headers={
                "Origin": "https://chat.example.com",
                "Authorization": "Bearer sk-cors-test-key",
            },
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and "x-request-id" in resp.getheader(
            "Access-Control-Expose-Headers"
        )
        conn.request("OPTIONS", "/v1/chat/completions", headers={"Origin": "https://evil.example"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 403 and resp.getheader("Access-Control-Allow-Origin") is None


def test_no_cors_by_default(mock_gateway: Gateway) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", mock_gateway.port, timeout=5)
    conn.request("OPTIONS", "/v1/chat/completions", headers={"Origin": "https://chat.example.com"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404 and resp.getheader("Access-Control-Allow-Origin") is None
