"""The admin commands (`qiao db|keys|teams|providers`) as an operator runs them: real
processes against an SQLite file, and a real gateway started from the same config."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from gateway import QiaoProcess, clean_env

from qiao.policies.budget import period_start
from qiao.secrets import MasterKey, SecretError, Vault
from qiao.storage import open_store
from qiao.storage.models import ProviderSecret

QIAO = [sys.executable, "-m", "qiao"]
PROVIDER_KEY = "sk-proj-" + "Qz9" * 14


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qiao(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QIAO, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=60,
    )


@dataclass
class Site:
    """One deployment: a config file, its SQLite database, and a way to run `qiao`."""

    root: Path
    port: int = field(default_factory=_free_port)

    @property
    def db(self) -> Path:
        return self.root / "qiao.db"

    @property
    def config(self) -> Path:
        return self.root / "qiao.yaml"

    def write_config(self) -> None:
        self.config.write_text(f"""
listen: 127.0.0.1:{self.port}
admin_key: sk-qiao-cli-test-admin
providers:
  mock: {{type: mock}}
  openai: {{type: openai, api_key_from: store}}
  deepseek: {{type: deepseek, api_key_from: store}}
models: {{qiao-mock: [{{provider: mock}}], other: [{{provider: mock}}]}}
storage: {{url: "sqlite:///{self.db}", journal_dir: "{self.root / "journal"}"}}
""")

    def run(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        config = [] if "init-master" in args else ["--config", str(self.config)]
        return qiao(*args, *config, stdin=stdin, **env)

    def ok(self, *args: str, stdin: str = "", **env: str) -> str:
        proc = self.run(*args, stdin=stdin, **env)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        return proc.stdout

    def json(self, *args: str, stdin: str = "", **env: str) -> Any:
        return json.loads(self.ok(*args, "--json", stdin=stdin, **env))

    def raw_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.root.glob("qiao.db*"))


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    s.write_config()
    return s


def _stored(site: Site) -> tuple[list[ProviderSecret], list[tuple[str, str]]]:
    """Provider secrets and (actor, action) audit pairs, read through the store interface."""

    async def read() -> tuple[list[ProviderSecret], list[tuple[str, str]]]:
        store = open_store(f"sqlite:///{site.db}")
        try:
            audit = [(e.actor, e.action) for e in await store.list_audit(1000)]
            return await store.list_secrets(), audit
        finally:
            await store.close()

    return asyncio.run(read())


# ---------------------------------------------------------------------- db


def test_db_migrate_creates_the_schema_and_is_idempotent(site: Site) -> None:
    assert "up to date" in site.ok("db", "migrate")
    assert site.db.exists()
    assert "up to date" in site.ok("db", "migrate")
    assert site.json("keys", "list") == {"data": []}


# ---------------------------------------------------------------------- keys


def test_create_prints_the_secret_once_and_stores_only_its_digest(site: Site) -> None:
    out = site.ok("keys", "create", "--name", "alice", "--models", "qiao-*,gpt-*")
    fields = dict(line.split(None, 1) for line in out.splitlines())
    secret, key_id = fields["key"], fields["id"]
    assert secret.startswith("sk-qiao-") and key_id.startswith("key_")
    assert out.count(secret) == 1

    listed = site.ok("keys", "list") + site.ok("keys", "list", "--json")
    shown = site.ok("keys", "show", key_id) + site.ok("keys", "show", key_id, "--json")
    assert key_id in listed and "alice" in shown
    assert secret not in listed + shown and secret[8:30] not in listed + shown
    assert site.json("keys", "show", key_id)["hint"] == f"sk-…{secret[-4:]}"

    raw = site.raw_bytes()
    assert secret.encode() not in raw and secret[8:30].encode() not in raw
    assert hashlib.sha256(secret.encode()).digest() in raw  # what it keeps instead


def test_create_with_every_option(site: Site) -> None:
    team = site.json("teams", "create", "--name", "search")
    key = site.json(
        "keys", "create", "--name", "bob", "--team", "search", "--models", "gpt-*,claude-*",
        "--cidr", "10.0.0.0/8", "192.168.0.0/16", "--expires", "2027-01-01T00:00:00Z",
        "--rpm", "60", "--tpm", "1000", "--concurrency", "2", "--budget", "10",
        "--currency", "CNY", "--period", "day", "--soft", "--role", "viewer",
        "--metadata", "owner=bob", "env=prod",
    )  # fmt: skip
    assert key["team_id"] == team["id"]
    assert key["models"] == ["gpt-*", "claude-*"]
    assert key["cidrs"] == ["10.0.0.0/8", "192.168.0.0/16"]
    assert key["expires_at"].startswith("2027-01-01T00:00:00")
    assert key["limits"] == {"rpm": 60, "tpm": 1000, "concurrency": 2}
    assert key["budget"] == {"amount": "10", "currency": "CNY", "period": "day", "hard": False}
    assert key["role"] == "viewer" and key["metadata"] == {"owner": "bob", "env": "prod"}


def test_update_revoke_rotate_and_their_audit(site: Site) -> None:
    created = site.json("keys", "create", "--name", "carol", "--rpm", "10", "--tpm", "500")
    key_id = created["id"]

    updated = site.json("keys", "update", key_id, "--rpm", "5", "--name", "carol2")
    assert updated["name"] == "carol2"
    assert updated["limits"] == {"rpm": 5, "tpm": 500, "concurrency": None}  # tpm kept

    rotated = site.json("keys", "rotate", key_id)
    assert rotated["key"].startswith("sk-qiao-") and rotated["key"] != created["key"]
    assert rotated["hint"] != created["hint"]

    revoked = site.json("keys", "revoke", key_id)
    assert revoked["revoked_at"]
    assert "revoked" in site.ok("keys", "list")
    again = site.run("keys", "rotate", key_id)
    assert again.returncode == 2 and "revoked" in again.stderr

    _, audit = _stored(site)
    assert {("cli", a) for a in ("key.create", "key.update", "key.rotate", "key.revoke")} <= set(
        audit
    )


def test_update_needs_something_to_change(site: Site) -> None:
    key_id = site.json("keys", "create", "--name", "dave")["id"]
    proc = site.run("keys", "update", key_id)
    assert proc.returncode == 2 and "nothing to change" in proc.stderr


# ---------------------------------------------------------------------- teams


def test_teams(site: Site) -> None:
    team = site.json("teams", "create", "--name", "search", "--rpm", "100", "--budget", "50")
    assert team["budget"]["amount"] == "50" and team["limits"]["rpm"] == 100
    assert "search" in site.ok("teams", "list")
    key_id = site.json("keys", "create", "--name", "eve", "--team", team["id"])["id"]
    assert [k["id"] for k in site.json("keys", "list", "--team", "search")["data"]] == [key_id]

    changed = site.json("teams", "update", "search", "--tpm", "1000", "--currency", "tokens")
    assert changed["limits"] == {"rpm": 100, "tpm": 1000, "concurrency": None}
    assert changed["budget"]["currency"] == "tokens" and changed["budget"]["amount"] == "50"

    busy = site.run("teams", "delete", "search")
    assert busy.returncode == 2 and "still has keys" in busy.stderr
    site.ok("keys", "update", key_id, "--no-team")
    assert site.json("teams", "delete", "search") == {"deleted": team["id"]}
    gone = site.run("teams", "show", team["id"])
    assert gone.returncode == 2 and "No team" in gone.stderr

    _, audit = _stored(site)
    assert {("cli", "team.create"), ("cli", "team.update"), ("cli", "team.delete")} <= set(audit)


# ---------------------------------------------------------------------- with a gateway


@pytest.fixture
def gateway(site: Site) -> Iterator[Site]:
    site.ok("db", "migrate")
    with QiaoProcess("serve", "--config", str(site.config), env=clean_env()) as gw:
        gw.wait_ready()  # killed as a group on the way out, whatever happened
        yield site


def _chat(site: Site, key: str, model: str = "qiao-mock") -> str:
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{site.port}/v1", api_key=key, max_retries=0, timeout=10
    )
    reply = client.chat.completions.create(
        model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


def _eventually(check: Any, seconds: float = 4.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (openai.AuthenticationError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_cli_key_works_on_a_running_gateway(gateway: Site) -> None:
    created = gateway.json("keys", "create", "--name", "frank", "--models", "qiao-*")
    assert _eventually(lambda: _chat(gateway, created["key"]))  # key sync: about a second
    with pytest.raises(openai.PermissionDeniedError):
        _chat(gateway, created["key"], "other")

    gateway.ok("keys", "revoke", created["id"])

    def refused() -> None:
        try:
            _chat(gateway, created["key"])
        except openai.AuthenticationError:
            return
        raise AssertionError("the gateway still accepts a revoked key")

    _eventually(refused)


# ---------------------------------------------------------------------- budget status and reset


def _chat_tokens(site: Site, key: str) -> int:
    """One call; the tokens it used (input + output)."""
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{site.port}/v1", api_key=key, max_retries=0, timeout=10
    )
    reply = client.chat.completions.create(
        model="qiao-mock", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.usage is not None
    return reply.usage.prompt_tokens + reply.usage.completion_tokens


def _spent_in_store(site: Site, scope: str, add: str = "0") -> Decimal:
    """The spend the store holds for ``scope`` this month (after adding ``add``)."""

    async def run() -> Decimal:
        store = open_store(f"sqlite:///{site.db}")
        try:
            start = period_start("month", datetime.now(UTC))  # the CLI's default period
            if Decimal(add):
                await store.adjust_spend(scope, start, Decimal(add))
            return await store.get_spend(scope, start)
        finally:
            await store.close()

    return asyncio.run(run())


def test_budget_show_and_reset_on_a_running_gateway(gateway: Site) -> None:
    created = gateway.json(
        "keys", "create", "--name", "quota", "--budget", "10", "--currency", "tokens"
    )
    key_id = created["id"]
    used = _eventually(lambda: _chat_tokens(gateway, created["key"]))  # after key sync
    with pytest.raises(openai.RateLimitError) as exc:
        _chat_tokens(gateway, created["key"])
    assert exc.value.code == "insufficient_quota"

    def shows_spend() -> dict[str, Any]:  # the store gets the spend within half a second
        status: dict[str, Any] = gateway.json("keys", "show", key_id)["budget_status"]
        assert status["spent"] == str(used), status
        return status

    status = _eventually(shows_spend)
    assert status["remaining"] == "0" and status["period"] == "month"  # the default
    text = gateway.ok("keys", "show", key_id)
    assert f"spent {used} tokens, remaining 0 tokens; month from " in text

    wrong = gateway.run("keys", "budget-reset", key_id, QIAO_ADMIN_KEY="sk-qiao-not-an-admin")
    assert wrong.returncode == 2 and "QIAO_ADMIN_KEY" in wrong.stderr
    reset = gateway.run("keys", "budget-reset", key_id, "--json")
    assert reset.returncode == 0 and reset.stderr == "", reset.stderr  # through the gateway
    assert json.loads(reset.stdout)["budget_status"]["spent"] == "0"
    assert _chat_tokens(gateway, created["key"]) == used  # served again, at once
    _, audit = _stored(gateway)
    assert ("cfg:admin", "key.budget_reset") in audit  # the gateway's audit: the admin key

    team = gateway.json("teams", "create", "--name", "search", "--budget", "1000", "--currency",
                        "tokens", "--period", "total")  # fmt: skip
    member = gateway.json("keys", "create", "--name", "m", "--team", "search")
    team_used = _eventually(lambda: _chat_tokens(gateway, member["key"]))

    def team_spend() -> dict[str, Any]:
        status: dict[str, Any] = gateway.json("teams", "show", "search")["budget_status"]
        assert status["spent"] == str(team_used), status
        return status

    assert _eventually(team_spend)["period_end"] is None
    assert "(never resets)" in gateway.ok("teams", "show", team["id"])
    out = gateway.json("teams", "budget-reset", "search")
    assert out["id"] == team["id"] and out["budget_status"]["spent"] == "0"
    assert out["budget_status"]["remaining"] == "1000"


def test_budget_reset_without_a_gateway_resets_the_store(site: Site) -> None:
    key = site.json("keys", "create", "--name", "k", "--budget", "40", "--currency", "tokens")
    plain = site.json("keys", "create", "--name", "plain")
    assert _spent_in_store(site, f"key:{key['id']}", add="7") == 7
    status = site.json("keys", "show", key["id"])["budget_status"]
    assert (status["spent"], status["remaining"], status["currency"]) == ("7", "33", "tokens")
    assert "budget_status" not in site.json("keys", "show", plain["id"])

    proc = site.run("keys", "budget-reset", key["id"], "--json")
    assert proc.returncode == 0, proc.stderr
    assert "no gateway answers" in proc.stderr  # nothing listens on the config's port
    assert json.loads(proc.stdout)["budget_status"]["spent"] == "0"
    assert _spent_in_store(site, f"key:{key['id']}") == 0
    _, audit = _stored(site)
    assert ("cli", "key.budget_reset") in audit

    none = site.run("keys", "budget-reset", plain["id"])
    assert none.returncode == 2 and "no budget" in none.stderr and none.stdout == ""
    missing = site.run("keys", "budget-reset", "key_missing")
    assert missing.returncode == 2 and "No key 'key_missing'" in missing.stderr

    team = site.json("teams", "create", "--name", "ops", "--budget", "2.5")
    _spent_in_store(site, f"team:{team['id']}", add="1.25")
    assert site.json("teams", "show", "ops")["budget_status"]["remaining"] == "1.25"
    proc = site.run("teams", "budget-reset", "ops", "--db", f"sqlite:///{site.db}", "--json")
    assert proc.returncode == 0 and proc.stderr == ""  # --db: the store alone, no gateway asked
    assert json.loads(proc.stdout)["budget_status"]["spent"] == "0"
    assert ("cli", "team.budget_reset") in _stored(site)[1]


# ---------------------------------------------------------------------- provider keys


def test_provider_key_from_stdin_is_stored_encrypted(site: Site) -> None:
    master = base64.b64encode(os.urandom(32)).decode()
    out = site.json(
        "providers", "set-key", "openai", stdin=PROVIDER_KEY + "\n", QIAO_MASTER_KEY=master
    )
    assert out["provider"] == "openai" and out["hint"] == f"sk-…{PROVIDER_KEY[-4:]}"
    listed = site.ok("providers", "list") + site.ok("providers", "list", "--json")
    assert f"sk-…{PROVIDER_KEY[-4:]}" in listed and PROVIDER_KEY[8:20] not in listed
    raw = site.raw_bytes()
    assert PROVIDER_KEY.encode() not in raw and PROVIDER_KEY[8:20].encode() not in raw
    secrets, audit = _stored(site)
    assert Vault(MasterKey.from_text(master)).open(secrets[0]) == PROVIDER_KEY
    assert ("cli", "provider_key.set") in audit


def test_init_master_prints_once_or_writes_a_private_file(site: Site, tmp_path: Path) -> None:
    printed = site.run("keys", "init-master")
    assert printed.returncode == 0 and len(printed.stdout.splitlines()) == 1
    assert len(base64.b64decode(printed.stdout.strip())) == 32
    path = tmp_path / "master.key"
    written = site.ok("keys", "init-master", "--file", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKey.from_file(path).key_id in written and path.read_text() not in written
    again = site.run("keys", "init-master", "--file", str(path))
    assert again.returncode == 2 and "already exists" in again.stderr


def test_rotate_master_round_trip(site: Site, tmp_path: Path) -> None:
    old_file = tmp_path / "old.key"
    site.ok("keys", "init-master", "--file", str(old_file))
    old = MasterKey.from_file(old_file)
    site.ok(
        "providers", "set-key", "openai", stdin=PROVIDER_KEY, QIAO_MASTER_KEY_FILE=str(old_file)
    )
    site.ok(
        "providers",
        "set-key",
        "deepseek",
        stdin="sk-" + "d" * 30,
        QIAO_MASTER_KEY_FILE=str(old_file),
    )
    new_text = site.ok("keys", "init-master").strip()
    new = MasterKey.from_text(new_text)

    out = site.ok(
        "keys", "rotate-master", "--old-key-file", str(old_file), QIAO_MASTER_KEY=new_text
    )
    assert "re-encrypted 2" in out

    secrets, audit = _stored(site)
    assert {s.key_id for s in secrets} == {new.key_id}
    opened = {s.name: Vault(new).open(s) for s in secrets}
    assert opened == {"openai": PROVIDER_KEY, "deepseek": "sk-" + "d" * 30}
    with pytest.raises(SecretError):
        Vault(old).open(secrets[0])
    assert ("cli", "master_key.rotate") in audit
    assert new.key_id in site.ok("providers", "list")

    newer = base64.b64encode(os.urandom(32)).decode()  # and once more, the old key from env
    site.ok("keys", "rotate-master", "--old-key-env", "OLD", QIAO_MASTER_KEY=newer, OLD=new_text)
    secrets, _ = _stored(site)
    assert Vault(MasterKey.from_text(newer)).open(secrets[0]) in opened.values()


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["keys", "create", "--name", "x", "--team", "nope"], {}, "No team 'nope'"),
        (["keys", "create", "--name", "x", "--cidr", "not-a-net"], {}, "--cidr"),
        (["keys", "create", "--name", "x", "--expires", "someday"], {}, "--expires"),
        (["keys", "create", "--name", "x", "--rpm", "0"], {}, "--rpm"),
        (["keys", "create", "--name", "x", "--metadata", "novalue"], {}, "KEY=VALUE"),
        (["keys", "create", "--name", "x", "--period", "day"], {}, "--budget AMOUNT"),
        (["keys", "show", "key_missing"], {}, "No key 'key_missing'"),
        (["providers", "set-key", "openai"], {}, "QIAO_MASTER_KEY"),
        (["keys", "rotate-master", "--old-key-env", "OLD"], {"OLD": "x"}, "QIAO_MASTER_KEY"),
        (
            ["keys", "rotate-master", "--old-key-env", "OLD"],
            {"QIAO_MASTER_KEY": base64.b64encode(b"k" * 32).decode()},
            "OLD is not set",
        ),
        (["providers", "set-key", "openai"], {"QIAO_MASTER_KEY": "short"}, "QIAO_MASTER_KEY"),
        (
            ["providers", "set-key", "openai"],  # nothing on stdin
            {"QIAO_MASTER_KEY": base64.b64encode(b"k" * 32).decode()},
            "the provider key",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(
    site: Site, args: list[str], env: dict[str, str], says: str
) -> None:
    proc = site.run(*args, **env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("qiao: ") and says in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_wrong_old_master_changes_nothing(site: Site) -> None:
    master = base64.b64encode(os.urandom(32)).decode()
    site.ok("providers", "set-key", "openai", stdin=PROVIDER_KEY, QIAO_MASTER_KEY=master)
    before, _ = _stored(site)
    wrong = base64.b64encode(os.urandom(32)).decode()
    newer = base64.b64encode(os.urandom(32)).decode()
    proc = site.run(
        "keys", "rotate-master", "--old-key-env", "OLD", QIAO_MASTER_KEY=newer, OLD=wrong
    )
    assert proc.returncode == 2 and "not loaded" in proc.stderr
    after, _ = _stored(site)
    assert [(s.key_id, s.ciphertext) for s in after] == [(s.key_id, s.ciphertext) for s in before]


def test_a_missing_config_file_is_a_message(tmp_path: Path) -> None:
    proc = qiao("keys", "list", "--config", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_provider_key_for_an_unconfigured_provider_is_refused(site: Site) -> None:
    # As PUT /admin/providers/{name}/key: a typo must not store a key nothing will use.
    master = base64.b64encode(os.urandom(32)).decode()
    proc = site.run("providers", "set-key", "opneai", stdin=PROVIDER_KEY, QIAO_MASTER_KEY=master)
    assert proc.returncode == 2 and "no provider 'opneai'" in proc.stderr
    assert "deepseek, mock, openai" in proc.stderr
    assert "opneai" not in site.ok("providers", "list")
