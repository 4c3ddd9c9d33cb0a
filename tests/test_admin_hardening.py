"""/admin as an attacker and a careless operator would meet it: one authentication path with
/v1 (source addresses, model scopes), throttled failures, logged and uncached answers, bodies
read with a timeout, a bootstrap token a typo cannot burn, honest limits and audit actors."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY
from gateway import Gateway

from qiao.admin.throttle import FailureThrottle, TooManyFailures
from qiao.auth import scope_matcher

CONFIG = f"""
admin_key: {ADMIN_KEY}
providers: {{mock: {{type: mock}}}}
models:
  qiao-mock: [{{provider: mock}}]
  other: [{{provider: mock}}]
  gemini-a: [{{provider: mock}}]
  gemini-a/b: [{{provider: mock}}]
"""


def call(
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    key: str | None = ADMIN_KEY,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """Status, headers and JSON body of one request over a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    try:
        conn.request(method, path, body=raw, headers=sent)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data)
    finally:
        conn.close()


def chat(gw: Gateway, key: str, model: str) -> str:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    r = client.chat.completions.create(
        model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    return r.choices[0].message.content or ""


@pytest.fixture
def gw() -> Iterator[Gateway]:
    with Gateway(CONFIG) as g:
        yield g


def new_key(gw: Gateway, **fields: Any) -> dict[str, Any]:
    status, _, created = call(gw, "POST", "/admin/keys", fields)
    assert status == 201, created
    return created


# ---------------------------------------------------------------------- one authentication path


def test_admin_key_outside_its_cidrs_is_refused_on_admin_too(gw: Gateway) -> None:
    far = new_key(gw, name="office-admin", role="admin", cidrs=["10.0.0.0/8"])
    for method, path, body in (
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"name": "escalated", "role": "admin"}),
    ):
        status, _, err = call(gw, method, path, body, key=far["key"])
        assert status == 403 and err["error"]["code"] == "ip_not_allowed", (path, err)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(gw, far["key"], "qiao-mock")
    assert exc.value.code == "ip_not_allowed"
    _, _, listed = call(gw, "GET", "/admin/keys")
    assert [k["name"] for k in listed["data"]] == ["office-admin"]  # nothing was created
    near = new_key(gw, name="local-admin", role="admin", cidrs=["127.0.0.0/8"])
    assert call(gw, "GET", "/admin/keys", key=near["key"])[0] == 200


def test_admin_role_keys_keep_their_model_scope(gw: Gateway) -> None:
    scoped = new_key(gw, name="ops", role="admin", models=["qiao-*"])
    assert chat(gw, scoped["key"], "qiao-mock")
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(gw, scoped["key"], "other")
    assert exc.value.code == "model_not_allowed"
    listed = openai.OpenAI(base_url=gw.base_url, api_key=scoped["key"]).models.list()
    assert [m.id for m in listed.data] == ["qiao-mock"]
    # the config's admin_key (scope "*") still reaches every model, provider/model names too
    assert chat(gw, ADMIN_KEY, "other") and chat(gw, ADMIN_KEY, "mock/anything")


def test_star_in_a_scope_does_not_cross_a_slash(gw: Gateway) -> None:
    gemini = new_key(gw, name="g", models=["gemini-*", "mock/*"])
    assert chat(gw, gemini["key"], "gemini-a")
    assert chat(gw, gemini["key"], "mock/gpt-4o")  # provider/* still covers its models
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(gw, gemini["key"], "gemini-a/b")
    assert exc.value.code == "model_not_allowed"
    everything = new_key(gw, name="all")  # the default scope, "*": every model
    assert chat(gw, everything["key"], "gemini-a/b")


@pytest.mark.parametrize(
    ("pattern", "model", "allowed"),
    [
        ("gemini-*", "gemini-2.5-pro", True),
        ("gemini-*", "gemini-x/gemini-ultra", False),
        ("gemini-*", "gemini-x/../gemini-ultra", False),
        ("openai/*", "openai/gpt-4o", True),
        ("openai/*", "openai/x/y", False),
        ("*/gpt-4o", "azure/gpt-4o", True),
        ("gpt-4o-?", "gpt-4o-x", True),
        ("gpt-4o-?", "gpt-4o-/", False),
        ("*", "deepseek-ai/DeepSeek-V3", True),
        ("gpt-4o.mini", "gpt-4oXmini", False),  # the rest is literal, "." included
        ("gpt-[45]o", "gpt-4o", False),  # no bracket classes: model names have no "["
        ("qwen*", "qwen3:8b", True),
    ],
)
def test_scope_patterns(pattern: str, model: str, allowed: bool) -> None:
    assert scope_matcher(pattern)(model) is allowed


# ---------------------------------------------------------------------- failed authentications


def test_failed_admin_authentications_are_throttled_and_logged(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    guesses = [f"sk-qiao-guess-{i:04d}-zz9plural" for i in range(10)]
    with caplog.at_level(logging.WARNING, logger="qiao.admin"):
        for guess in guesses:
            status, headers, err = call(gw, "GET", "/admin/keys", key=guess)
            assert status == 401 and err["error"]["code"] == "invalid_api_key"
        status, headers, err = call(gw, "GET", "/admin/keys", key=guesses[0])
        assert status == 429 and err["error"]["code"] == "too_many_failed_authentications"
        assert 1 <= int(headers["retry-after"]) <= 60
        # held back whatever it presents: the right key must not stand out
        assert call(gw, "GET", "/admin/keys")[0] == 429
        assert call(gw, "POST", "/admin/bootstrap", key=guesses[1])[0] == 429
    assert chat(gw, ADMIN_KEY, "qiao-mock")  # /v1 is not held back
    logged = caplog.text
    assert logged.count("admin authentication failed from 127.0.0.1") == 10
    assert "held back" in logged
    for guess in guesses:  # not a key, nor any prefix of one that says more than our own
        assert guess[:12] not in logged and guess[-8:] not in logged


def test_throttle_window_expires_and_memory_is_bounded() -> None:
    now = [0.0]
    throttle = FailureThrottle(limit=2, window_s=60, max_sources=3, clock=lambda: now[0])
    throttle.failed("192.0.2.1", "invalid_api_key")
    throttle.check("192.0.2.1")
    throttle.failed("192.0.2.1", "invalid_api_key")
    with pytest.raises(TooManyFailures) as exc:
        throttle.check("192.0.2.1")
    assert exc.value.retry_after == 60
    now[0] = 59.5
    with pytest.raises(TooManyFailures):
        throttle.check("192.0.2.1")
    now[0] = 60.0
    throttle.check("192.0.2.1")  # the window is over
    for i in range(100):
        throttle.failed(f"198.51.100.{i}", None)
    assert len(throttle) == 3
    # one IPv6 host holds a /64: its addresses share one count
    throttle.failed("2001:db8::1", None)
    throttle.failed("2001:db8::ffff:2", None)
    with pytest.raises(TooManyFailures):
        throttle.check("2001:db8::3")
    throttle.check("2001:db8:0:1::1")


# ---------------------------------------------------------------------- every answer


def test_admin_requests_are_in_the_access_log(gw: Gateway) -> None:
    since = len(gw.log.lines)
    call(gw, "GET", "/admin/keys")
    rec = gw.log.wait_until(lambda r: r["path"] == "/admin/keys", since=since, timeout=30)
    assert rec["method"] == "GET" and rec["status"] == 200 and rec["key"] == "admin"
    since = len(gw.log.lines)
    call(gw, "GET", "/admin/audit?key=sk-in-the-query-0000", key=None)
    rec = gw.log.wait_until(lambda r: r["path"] == "/admin/audit", since=since, timeout=30)
    assert rec["status"] == 401 and rec["error"] == "invalid_api_key"
    assert "sk-in-the-query" not in gw.log.text


def test_every_admin_answer_is_no_store(gw: Gateway) -> None:
    answers = [
        call(gw, "GET", "/admin/openapi.json", key=None),
        call(gw, "POST", "/admin/keys", {"name": "fresh"}),  # holds a new secret
        call(gw, "GET", "/admin/keys/key_missing"),
        call(gw, "GET", "/admin/nothing-here"),
        call(gw, "POST", "/admin/keys", {"colour": "red"}),
        call(gw, "GET", "/admin/keys", key="sk-qiao-wrong-000000"),
    ]
    assert [status for status, _, _ in answers] == [200, 201, 404, 404, 400, 401]
    for _, headers, _ in answers:
        assert headers.get("cache-control") == "no-store"


def test_admin_body_has_a_timeout(tmp_path: Path) -> None:
    with Gateway(CONFIG + "server: {body_timeout: 1}\n") as slow:
        with socket.create_connection(("127.0.0.1", slow.port), timeout=30) as s:
            s.sendall(
                b"POST /admin/keys HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {ADMIN_KEY}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            t0 = time.monotonic()
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - t0 < 25
        assert b"request_timeout" in answer and b"no-store" in answer


@pytest.mark.parametrize("limit", ["-1", "0", "ten", "1.5"])
def test_invalid_limits_are_refused(gw: Gateway, limit: str) -> None:
    for path in ("/admin/audit", "/admin/usage"):
        status, _, err = call(gw, "GET", f"{path}?limit={limit}")
        assert status == 400 and err["error"]["param"] == "limit", (path, err)


def test_large_limits_are_clamped_to_the_cap(gw: Gateway) -> None:
    for i in range(3):
        call(gw, "POST", "/admin/teams", {"name": f"t{i}"})
    status, _, audit = call(gw, "GET", "/admin/audit?limit=99999999999999999999")
    assert status == 200 and len(audit["data"]) == 3
    status, _, audit = call(gw, "GET", "/admin/audit?limit=2")
    assert status == 200 and len(audit["data"]) == 2


# ---------------------------------------------------------------------- bootstrap


def test_a_bad_bootstrap_body_does_not_burn_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "qiao-bootstrap-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
    monkeypatch.setenv("QIAO__BOOTSTRAP_TOKEN", token)
    monkeypatch.delenv("QIAO_WORKER_INDEX", raising=False)
    cfg = "providers: {mock: {type: mock}}\nmodels: {m: [{provider: mock}]}\n"
    with Gateway(cfg) as gw:
        for bad in (b"{not json", b'{"name": ""}', b'{"name": "x", "colour": 1}', b"[]"):
            status, headers, err = call(gw, "POST", "/admin/bootstrap", bad, key=token)
            assert status == 400, (bad, err)
            assert headers["cache-control"] == "no-store"
        status, _, admin = call(gw, "POST", "/admin/bootstrap", {"name": "root"}, key=token)
        assert status == 201 and admin["role"] == "admin" and admin["name"] == "root"
        assert call(gw, "POST", "/admin/bootstrap", {"name": "again"}, key=token)[0] == 401
        assert call(gw, "GET", "/admin/keys", key=admin["key"])[0] == 200
        _, _, audit = call(gw, "GET", "/admin/audit", key=admin["key"])
        assert [(e["actor"], e["action"]) for e in audit["data"]] == [("bootstrap", "key.create")]


# ---------------------------------------------------------------------- provider keys, audit


def test_provider_key_for_an_unknown_provider_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIAO_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    with Gateway(CONFIG) as gw:
        body = {"api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz"}
        status, _, err = call(gw, "PUT", "/admin/providers/opneai/key", body)
        assert status == 404 and err["error"]["code"] == "provider_not_found"
        assert "'opneai'" in err["error"]["message"] and "mock" in err["error"]["message"]
        assert call(gw, "PUT", "/admin/providers/mock/key", body)[0] == 200
        _, _, listed = call(gw, "GET", "/admin/providers")
        assert [s["provider"] for s in listed["data"]] == ["mock"]


def test_audit_actor_is_the_key_id(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    storage = f'storage: {{url: "sqlite:///{db}", journal_dir: "{tmp_path / "j"}"}}\n'
    with Gateway(CONFIG + storage) as gw:
        first = new_key(gw, name="ops", role="admin")
        second = new_key(gw, name="ops", role="admin")  # names are not unique
        for i, who in enumerate((first, second)):
            assert call(gw, "POST", "/admin/teams", {"name": f"t{i}"}, key=who["key"])[0] == 201
        _, _, audit = call(gw, "GET", "/admin/audit?limit=2")
    made = [(e["actor"], e["actor_name"]) for e in audit["data"]]
    assert made == [(second["id"], "ops"), (first["id"], "ops")]


# ---------------------------------------------------------------------- start-up


def test_a_short_admin_key_is_warned_about(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qiao.app"), Gateway(CONFIG):
        pass
    assert f"admin_key is only {len(ADMIN_KEY)} characters" in capsys.readouterr().err
    assert any("admin_key is only" in r.getMessage() for r in caplog.records)
    assert ADMIN_KEY not in caplog.text
    caplog.clear()
    strong = CONFIG.replace(ADMIN_KEY, "sk-qiao-" + "k" * 40)
    with caplog.at_level(logging.WARNING, logger="qiao.app"), Gateway(strong):
        pass
    assert "admin_key" not in capsys.readouterr().err and "admin_key" not in caplog.text
