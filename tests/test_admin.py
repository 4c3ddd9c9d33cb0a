"""Virtual keys, teams, limits and budgets through the admin API, used by the official SDK."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import ADMIN_KEY
from gateway import Gateway, QiaoProcess


def config(db: Path, journal: str = "journal") -> str:
    return f"""
admin_key: {ADMIN_KEY}
providers: {{mock: {{type: mock}}}}
models: {{qiao-mock: [{{provider: mock}}], other: [{{provider: mock}}], {PRICED}: [{{provider: mock}}]}}
storage: {{url: "sqlite:///{db}", journal_dir: "{db.parent / journal}", sync_interval: 0.2}}
"""


PRICED = "gpt-4o-mini"  # in qiao.pricing.DEFAULT_PRICES: the mock's answers cost real USD


def call(
    gw: Gateway, method: str, path: str, body: Any = None, key: str = ADMIN_KEY
) -> tuple[int, Any]:
    req = urllib.request.Request(
        gw.url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def sdk(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def chat(gw: Gateway, key: str, model: str = "qiao-mock") -> str:
    r = sdk(gw, key).chat.completions.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    return r.choices[0].message.content or ""


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(config(tmp_path / "qiao.db")) as g:
        yield g


def test_key_lifecycle(gw: Gateway) -> None:
    status, team = call(gw, "POST", "/admin/teams", {"name": "search"})
    assert status == 201
    status, created = call(
        gw, "POST", "/admin/keys", {"name": "alice", "team_id": team["id"], "models": ["qiao-*"]}
    )
    assert status == 201 and created["key"].startswith("sk-qiao-")
    secret = created["key"]
    assert created["hint"].endswith(secret[-4:]) and secret not in json.dumps(created["hint"])
    _, listed = call(gw, "GET", "/admin/keys")
    assert all("key" not in k and "key_hash" not in k for k in listed["data"])
    assert secret not in json.dumps(listed)
    assert chat(gw, secret).startswith("Hello")
    with pytest.raises(openai.PermissionDeniedError):
        chat(gw, secret, "other")  # outside the key's models
    assert gw.log.last()["key"] == "alice"
    status, rotated = call(gw, "POST", f"/admin/keys/{created['id']}/rotate")
    assert status == 200
    with pytest.raises(openai.AuthenticationError):
        chat(gw, secret)
    assert chat(gw, rotated["key"])
    call(gw, "POST", f"/admin/keys/{created['id']}/revoke")
    with pytest.raises(openai.AuthenticationError):
        chat(gw, rotated["key"])
    _, audit = call(gw, "GET", "/admin/audit")
    actions = [e["action"] for e in audit["data"]]
    assert {"team.create", "key.create", "key.rotate", "key.revoke"} <= set(actions)
    # the actor is the key's id (names are not unique): cfg:<name> for the config's admin_key
    assert all(e["actor"] == "cfg:admin" and e["actor_name"] == "admin" for e in audit["data"])


def test_roles_and_bad_input(gw: Gateway) -> None:
    _, viewer = call(gw, "POST", "/admin/keys", {"name": "v", "role": "viewer"})
    _, user = call(gw, "POST", "/admin/keys", {"name": "u"})
    assert call(gw, "GET", "/admin/keys", key=viewer["key"])[0] == 200
    assert call(gw, "POST", "/admin/keys", {"name": "x"}, key=viewer["key"])[0] == 403
    assert call(gw, "GET", "/admin/keys", key=user["key"])[0] == 403
    assert call(gw, "GET", "/admin/keys", key="sk-nobody-000000")[0] == 401
    status, err = call(gw, "POST", "/admin/keys", {"name": "x", "cidrs": ["not-a-net"]})
    assert status == 400 and "cidrs" in err["error"]["message"]
    assert call(gw, "POST", "/admin/keys", {"name": "x", "colour": "red"})[0] == 400
    assert call(gw, "GET", "/admin/keys/key_missing")[0] == 404
    status, doc = call(gw, "GET", "/admin/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.") and "/admin/keys" in doc["paths"]


def test_rate_limit_is_a_429_with_headers(gw: Gateway) -> None:
    _, key = call(gw, "POST", "/admin/keys", {"name": "slow", "limits": {"rpm": 2}})
    chat(gw, key["key"])
    chat(gw, key["key"])
    with pytest.raises(openai.RateLimitError) as exc:
        chat(gw, key["key"])
    headers = exc.value.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_token_budget_refuses_when_spent(gw: Gateway) -> None:
    _, key = call(
        gw,
        "POST",
        "/admin/keys",
        {"name": "b", "budget": {"amount": "10", "currency": "tokens", "period": "day"}},
    )
    chat(gw, key["key"])
    with pytest.raises(openai.RateLimitError) as exc:
        chat(gw, key["key"])
    assert exc.value.code == "insufficient_quota"


def test_source_address_restriction(gw: Gateway) -> None:
    _, key = call(gw, "POST", "/admin/keys", {"name": "office", "cidrs": ["10.0.0.0/8"]})
    with pytest.raises(openai.PermissionDeniedError) as exc:
        chat(gw, key["key"])
    assert exc.value.code == "ip_not_allowed"
    _, ok = call(gw, "POST", "/admin/keys", {"name": "local", "cidrs": ["127.0.0.0/8"]})
    assert chat(gw, ok["key"])


def test_expired_key(gw: Gateway) -> None:
    _, key = call(gw, "POST", "/admin/keys", {"name": "old", "expires_at": "2020-01-01T00:00:00Z"})
    with pytest.raises(openai.AuthenticationError) as exc:
        chat(gw, key["key"])
    assert exc.value.code == "expired_api_key"


def test_revocation_reaches_another_node_within_two_seconds(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    with Gateway(config(db)) as a, Gateway(config(db, "journal-b")) as b:
        _, key = call(a, "POST", "/admin/keys", {"name": "roaming"})
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                chat(b, key["key"])
                break
            except openai.AuthenticationError:
                time.sleep(0.05)
        assert chat(b, key["key"])  # node B learnt the new key
        call(a, "POST", f"/admin/keys/{key['id']}/revoke")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2:
            try:
                chat(b, key["key"])
                time.sleep(0.05)
            except openai.AuthenticationError:
                break
        else:
            pytest.fail("node B still accepts a key revoked on node A after 2 s")


def test_provider_key_needs_a_master_key(gw: Gateway) -> None:
    status, err = call(
        gw, "PUT", "/admin/providers/openai/key", {"api_key": "sk-proj-abcdefghijklmnopqrstuvwxyz"}
    )
    assert status == 400 and err["error"]["code"] == "no_master_key"


def test_provider_key_stored_encrypted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QIAO_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    provider_key = "sk-proj-" + "Zq7" * 14
    db = tmp_path / "q.db"
    with Gateway(config(db)) as gw:
        status, out = call(gw, "PUT", "/admin/providers/mock/key", {"api_key": provider_key})
        assert status == 200 and out["hint"] == "sk-…7Zq7" and provider_key not in json.dumps(out)
        _, listed = call(gw, "GET", "/admin/providers")
        assert provider_key not in json.dumps(listed)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("q.db*"))
    assert provider_key.encode() not in raw and provider_key[8:20].encode() not in raw


def test_bootstrap_token_creates_the_first_admin_once(tmp_path: Path) -> None:
    cfg = tmp_path / "q.yaml"
    port = 18000 + os.getpid() % 1000
    cfg.write_text(f"""
listen: 127.0.0.1:{port}
providers: {{mock: {{type: mock}}}}
models: {{m: [{{provider: mock}}]}}
keys: [{{name: k, key: sk-bootstrap-user-key}}]
storage: {{url: "sqlite:///{tmp_path / "b.db"}", journal_dir: "{tmp_path / "j"}"}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIAO_")}
    with QiaoProcess("serve", "--config", str(cfg), env=env) as gw:  # killed as a group
        seen = gw.wait_ready()
        token = re.search(r"Bearer (qiao-bootstrap-\S+?)'", seen)
        assert token, seen
        url = f"http://127.0.0.1:{port}/admin/bootstrap"

        def post(tok: str) -> tuple[int, Any]:
            req = urllib.request.Request(
                url,
                method="POST",
                data=b'{"name": "root"}',
                headers={"Authorization": f"Bearer {tok}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())

        assert post("qiao-bootstrap-guess")[0] == 401
        status, admin = post(token.group(1))
        assert status == 201 and admin["role"] == "admin"
        assert post(token.group(1))[0] == 401  # used up
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/admin/keys",
            headers={"Authorization": f"Bearer {admin['key']}"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200


def test_provider_key_from_the_store_is_used_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes.openai_upstream import FakeOpenAI

    monkeypatch.setenv("QIAO_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    upstream_key = "sk-stored-upstream-key-0123456789"
    with FakeOpenAI(api_key=upstream_key) as fake:
        cfg = f"""
admin_key: {ADMIN_KEY}
providers: {{up: {{type: openai, base_url: "{fake.base_url}", api_key_from: store}}}}
models: {{gpt-4o-mini: [{{provider: up}}]}}
storage: {{url: "sqlite:///{tmp_path / "s.db"}", journal_dir: "{tmp_path / "j"}", sync_interval: 0.1}}
"""
        with Gateway(cfg) as gw:
            with pytest.raises(openai.InternalServerError) as exc:
                sdk(gw, ADMIN_KEY).chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
                )
            assert exc.value.status_code == 503
            assert call(gw, "PUT", "/admin/providers/up/key", {"api_key": upstream_key})[0] == 200
            deadline = time.monotonic() + 3
            while True:
                try:
                    r = sdk(gw, ADMIN_KEY).chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
                    )
                    break
                except openai.InternalServerError:
                    assert time.monotonic() < deadline, "stored provider key never picked up"
                    time.sleep(0.1)
            assert r.choices[0].message.content == "echo: x"
            assert fake.last_request.headers["Authorization"] == f"Bearer {upstream_key}"


# ---------------------------------------------------------------------- budget status and reset


def chat_usage(gw: Gateway, key: str, model: str = "qiao-mock") -> int:
    """One call; the tokens it used (input + output), as the answer reports them."""
    r = sdk(gw, key).chat.completions.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert r.usage is not None
    return r.usage.prompt_tokens + r.usage.completion_tokens


def settled_usage(gw: Gateway, key_id: str, count: int) -> list[dict[str, Any]]:
    """The key's usage rows once ``count`` of them are settled (they are written behind)."""
    deadline = time.monotonic() + 5
    while True:
        _, usage = call(gw, "GET", f"/admin/usage?key_id={key_id}")
        rows = [r for r in usage["data"] if r["status"] != "pending"]
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) == count, usage
            return rows
        time.sleep(0.05)


def status_of(gw: Gateway, path: str) -> dict[str, Any]:
    status, shown = call(gw, "GET", path)
    assert status == 200, shown
    return shown["budget_status"]


def test_usd_budget_status_is_the_settled_cost(gw: Gateway) -> None:
    budget = {"amount": "0.5", "currency": "USD", "period": "month"}
    _, key = call(gw, "POST", "/admin/keys", {"name": "priced", "budget": budget})
    for _ in range(3):
        chat(gw, key["key"], PRICED)
    rows = settled_usage(gw, key["id"], 3)
    cost = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
    assert cost > 0 and {r["currency"] for r in rows} == {"USD"}

    shown = status_of(gw, f"/admin/keys/{key['id']}")
    # settled to the real cost: a reservation left at its maximum would be far more
    assert Decimal(shown["spent"]) == cost
    assert Decimal(shown["remaining"]) == Decimal("0.5") - cost
    assert shown["currency"] == "USD" and shown["period"] == "month"
    start = datetime.fromisoformat(shown["period_start"])
    end = datetime.fromisoformat(shown["period_end"])
    now = datetime.now(UTC)
    assert start.utcoffset() is not None and start.utcoffset().total_seconds() == 0
    assert start.day == 1 and start <= now < end and (end.month - start.month) % 12 == 1
    # lists stay as they were: no per-row ledger look-ups
    _, listed = call(gw, "GET", "/admin/keys")
    assert all("budget_status" not in k for k in listed["data"])


def test_token_budget_status_counts_input_and_output(gw: Gateway) -> None:
    budget = {"amount": "1000", "currency": "tokens", "period": "total"}
    _, key = call(gw, "POST", "/admin/keys", {"name": "tokens", "budget": budget})
    used = sum(chat_usage(gw, key["key"]) for _ in range(4))
    shown = status_of(gw, f"/admin/keys/{key['id']}")
    assert shown == {
        "spent": str(used),
        "remaining": str(1000 - used),
        "currency": "tokens",
        "period": "total",
        "period_start": "1970-01-01T00:00:00+00:00",
        "period_end": None,  # a prepaid quota never resets
    }
    _, plain = call(gw, "POST", "/admin/keys", {"name": "no-budget"})
    assert "budget_status" not in call(gw, "GET", f"/admin/keys/{plain['id']}")[1]


def test_reset_lets_a_refused_key_work_again_and_is_audited(gw: Gateway) -> None:
    budget = {"amount": "10", "currency": "tokens", "period": "day"}
    _, key = call(gw, "POST", "/admin/keys", {"name": "quota", "budget": budget})
    used = chat_usage(gw, key["key"])
    with pytest.raises(openai.RateLimitError) as exc:
        chat(gw, key["key"])
    assert exc.value.code == "insufficient_quota"
    assert status_of(gw, f"/admin/keys/{key['id']}")["spent"] == str(used)

    status, reset = call(gw, "POST", f"/admin/keys/{key['id']}/budget/reset")
    assert status == 200 and reset["id"] == key["id"] and "key" not in reset
    assert reset["budget_status"]["spent"] == "0"
    assert reset["budget_status"]["remaining"] == "10"
    assert status_of(gw, f"/admin/keys/{key['id']}")["spent"] == "0"
    assert chat(gw, key["key"]).startswith("Hello")  # served again

    _, audit = call(gw, "GET", "/admin/audit")
    entry = next(e for e in audit["data"] if e["action"] == "key.budget_reset")
    assert entry["target"] == key["id"] and entry["actor"] == "cfg:admin"
    assert entry["detail"]["spent"] == str(used) and entry["detail"]["currency"] == "tokens"


def test_budget_reset_errors(gw: Gateway) -> None:
    _, viewer = call(gw, "POST", "/admin/keys", {"name": "v", "role": "viewer"})
    budget = {"amount": "40", "currency": "tokens", "period": "day"}
    _, key = call(gw, "POST", "/admin/keys", {"name": "b", "budget": budget})
    _, plain = call(gw, "POST", "/admin/keys", {"name": "p"})
    _, team = call(gw, "POST", "/admin/teams", {"name": "t"})

    status, err = call(gw, "POST", f"/admin/keys/{key['id']}/budget/reset", key=viewer["key"])
    assert status == 403 and err["error"]["code"] == "read_only"
    assert status_of(gw, f"/admin/keys/{key['id']}") is not None  # a viewer may read it
    assert call(gw, "GET", f"/admin/keys/{key['id']}", key=viewer["key"])[0] == 200
    status, err = call(gw, "POST", "/admin/keys/key_missing/budget/reset")
    assert status == 404 and err["error"]["code"] == "key_not_found"
    status, err = call(gw, "POST", "/admin/teams/team_missing/budget/reset")
    assert status == 404 and err["error"]["code"] == "team_not_found"
    for path in (f"/admin/keys/{plain['id']}", f"/admin/teams/{team['id']}"):
        status, err = call(gw, "POST", path + "/budget/reset")
        assert status == 400 and err["error"]["code"] == "no_budget", err
        assert err["error"]["type"] == "invalid_request_error"
    _, audit = call(gw, "GET", "/admin/audit")
    assert not any(e["action"].endswith("budget_reset") for e in audit["data"])

    _, doc = call(gw, "GET", "/admin/openapi.json")
    assert "post" in doc["paths"]["/admin/keys/{id}/budget/reset"]
    assert "post" in doc["paths"]["/admin/teams/{id}/budget/reset"]
    assert "BudgetStatus" in doc["components"]["schemas"]


def test_team_budget_status_and_reset(gw: Gateway) -> None:
    budget = {"amount": "1", "currency": "USD", "period": "week", "hard": False}
    _, team = call(gw, "POST", "/admin/teams", {"name": "search", "budget": budget})
    _, a = call(gw, "POST", "/admin/keys", {"name": "a", "team_id": team["id"]})
    _, b = call(gw, "POST", "/admin/keys", {"name": "b", "team_id": team["id"]})
    for secret in (a["key"], b["key"], a["key"]):
        chat(gw, secret, PRICED)
    rows = settled_usage(gw, a["id"], 2) + settled_usage(gw, b["id"], 1)
    cost = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
    shown = status_of(gw, f"/admin/teams/{team['id']}")
    assert Decimal(shown["spent"]) == cost > 0
    assert Decimal(shown["remaining"]) == 1 - cost
    assert shown["period"] == "week" and shown["currency"] == "USD"
    start = datetime.fromisoformat(shown["period_start"])
    assert start.weekday() == 0 and datetime.fromisoformat(shown["period_end"]) - start == (
        datetime(2000, 1, 8) - datetime(2000, 1, 1)
    )
    _, listed = call(gw, "GET", "/admin/teams")
    assert all("budget_status" not in t for t in listed["data"])

    status, reset = call(gw, "POST", f"/admin/teams/{team['id']}/budget/reset")
    assert status == 200 and reset["budget_status"]["spent"] == "0"
    assert reset["budget_status"]["remaining"] == "1"
    _, audit = call(gw, "GET", "/admin/audit")
    assert any(
        e["action"] == "team.budget_reset" and e["target"] == team["id"] for e in audit["data"]
    )


def test_budget_status_is_null_when_the_spend_ledger_is_down(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: Redis is "down"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config(tmp_path / "q.db").replace(
        "sync_interval: 0.2}", f'sync_interval: 0.2, redis_url: "redis://127.0.0.1:{port}/0"}}'
    )
    with Gateway(cfg) as gw:
        budget = {"amount": "5", "currency": "USD", "period": "day"}
        _, key = call(gw, "POST", "/admin/keys", {"name": "k", "budget": budget})
        status, shown = call(gw, "GET", f"/admin/keys/{key['id']}")
        assert status == 200 and shown["budget_status"] is None
        assert str(port) not in json.dumps(shown) and "redis" not in json.dumps(shown).lower()
        _, team = call(gw, "POST", "/admin/teams", {"name": "t", "budget": budget})
        status, shown = call(gw, "GET", f"/admin/teams/{team['id']}")
        assert status == 200 and shown["budget_status"] is None
        status, err = call(gw, "POST", f"/admin/keys/{key['id']}/budget/reset")
        assert status == 503 and str(port) not in json.dumps(err)
