from __future__ import annotations

import base64
import dataclasses
import sqlite3
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qiao.secrets import MasterKey, SecretError, Vault, hint
from qiao.storage.models import ProviderSecret

PROVIDER_KEY = "sk-proj-" + "Qx7bN2vLk9TzR4mWp8sYc3HdJ6fGa1UeVo5iKr0w"  # 8 + 40 characters


def _raw(key: MasterKey) -> bytes:
    return base64.b64decode(key.to_text())


def _key_forms(key: MasterKey) -> list[str]:
    raw = _raw(key)
    return [key.to_text(), raw.hex(), base64.urlsafe_b64encode(raw).decode().rstrip("=")]


# --- sealing


def test_round_trip() -> None:
    vault = Vault(MasterKey.generate())

    secret = vault.seal("openai", PROVIDER_KEY)

    assert vault.open(secret) == PROVIDER_KEY
    assert secret.name == "openai"
    assert secret.key_id == vault.key_id
    assert secret.hint == "sk-…Kr0w"
    assert len(secret.nonce) == 12
    assert PROVIDER_KEY.encode() not in secret.ciphertext


def test_each_seal_uses_a_fresh_nonce() -> None:
    vault = Vault(MasterKey.generate())

    first, second = vault.seal("openai", PROVIDER_KEY), vault.seal("openai", PROVIDER_KEY)

    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


def _flip(data: bytes, at: int = 0) -> bytes:
    flipped = bytearray(data)
    flipped[at] ^= 1
    return bytes(flipped)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: dataclasses.replace(s, ciphertext=_flip(s.ciphertext)), id="ct"),
        pytest.param(
            lambda s: dataclasses.replace(s, ciphertext=_flip(s.ciphertext, -1)), id="tag"
        ),
        pytest.param(
            lambda s: dataclasses.replace(s, ciphertext=s.ciphertext[:-1]), id="truncated"
        ),
        pytest.param(lambda s: dataclasses.replace(s, nonce=_flip(s.nonce)), id="nonce"),
        pytest.param(lambda s: dataclasses.replace(s, nonce=s.nonce[:8]), id="short-nonce"),
        pytest.param(lambda s: dataclasses.replace(s, name="anthropic"), id="name"),
    ],
)
def test_tampered_secret_is_rejected(tamper: Callable[[ProviderSecret], ProviderSecret]) -> None:
    vault = Vault(MasterKey.generate())
    secret = vault.seal("openai", PROVIDER_KEY)

    with pytest.raises(SecretError) as info:
        vault.open(tamper(secret))

    assert PROVIDER_KEY not in str(info.value)


def test_ciphertext_cannot_be_moved_to_another_name() -> None:
    vault = Vault(MasterKey.generate())
    openai, anthropic = vault.seal("openai", PROVIDER_KEY), vault.seal("anthropic", "sk-ant-x" * 4)
    swapped = dataclasses.replace(anthropic, ciphertext=openai.ciphertext, nonce=openai.nonce)

    with pytest.raises(SecretError, match="'anthropic' failed authentication"):
        vault.open(swapped)


def test_wrong_master_is_rejected_without_leaking_either_key() -> None:
    right, wrong = MasterKey.generate(), MasterKey.generate()
    secret = Vault(right).seal("openai", PROVIDER_KEY)

    with pytest.raises(SecretError) as info:
        Vault(wrong).open(secret)

    message = str(info.value)
    assert right.key_id in message and "not loaded" in message
    for leaked in [PROVIDER_KEY, *_key_forms(right), *_key_forms(wrong)]:
        assert leaked not in message


def test_wrong_master_under_a_forged_key_id_fails_authentication() -> None:
    right, wrong = MasterKey.generate(), MasterKey.generate()
    secret = dataclasses.replace(Vault(right).seal("openai", PROVIDER_KEY), key_id=wrong.key_id)

    with pytest.raises(SecretError, match="failed authentication") as info:
        Vault(wrong).open(secret)

    for leaked in [PROVIDER_KEY, *_key_forms(right), *_key_forms(wrong)]:
        assert leaked not in str(info.value)


@pytest.mark.parametrize(("name", "plaintext"), [("", PROVIDER_KEY), ("openai", "")])
def test_seal_refuses_empty_name_or_secret(name: str, plaintext: str) -> None:
    with pytest.raises(SecretError):
        Vault(MasterKey.generate()).seal(name, plaintext)


# --- rotation


def test_rotate_reseals_under_the_new_master() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    stamp = datetime(2025, 1, 2, tzinfo=UTC)
    sealed = [
        dataclasses.replace(Vault(old).seal("openai", PROVIDER_KEY), updated_at=stamp),
        Vault(old).seal("gemini", "AIzaSyD-" + "g" * 31),
    ]

    rotated = Vault(new, previous=[old]).rotate(sealed)

    assert [s.name for s in rotated] == ["openai", "gemini"]
    assert {s.key_id for s in rotated} == {new.key_id}
    assert rotated[0].updated_at == stamp
    assert [s.hint for s in rotated] == [s.hint for s in sealed]
    assert [Vault(new).open(s) for s in rotated] == [PROVIDER_KEY, "AIzaSyD-" + "g" * 31]
    with pytest.raises(SecretError):
        Vault(old).open(rotated[0])


def test_rotate_fails_whole_when_a_secret_cannot_be_opened() -> None:
    old, new, stranger = MasterKey.generate(), MasterKey.generate(), MasterKey.generate()
    sealed = [Vault(old).seal("openai", PROVIDER_KEY), Vault(stranger).seal("x", PROVIDER_KEY)]

    with pytest.raises(SecretError, match="'x'"):
        Vault(new, previous=[old]).rotate(sealed)


def test_previous_keys_open_but_never_seal() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    vault = Vault(new, previous=[old, new])

    assert vault.open(Vault(old).seal("openai", PROVIDER_KEY)) == PROVIDER_KEY
    assert vault.seal("openai", PROVIDER_KEY).key_id == new.key_id


# --- the master key


def test_key_id_is_a_short_fingerprint_that_does_not_leak_the_key() -> None:
    key = MasterKey.generate()

    assert len(key.key_id) == 8 and int(key.key_id, 16) >= 0
    assert key.key_id not in _raw(key).hex()
    assert MasterKey(_raw(key)).key_id == key.key_id
    assert MasterKey.generate().key_id != key.key_id


def test_repr_shows_only_the_fingerprint() -> None:
    key = MasterKey.generate()

    assert repr(key) == f"MasterKey(key_id='{key.key_id}')"
    assert all(form not in repr(key) for form in _key_forms(key))


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda raw: base64.b64encode(raw).decode(), id="base64"),
        pytest.param(lambda raw: base64.b64encode(raw).decode().rstrip("="), id="base64-unpadded"),
        pytest.param(lambda raw: base64.urlsafe_b64encode(raw).decode(), id="base64url"),
        pytest.param(lambda raw: raw.hex(), id="hex"),
        pytest.param(lambda raw: raw.hex().upper() + "\n", id="HEX-newline"),
    ],
)
def test_master_from_env(encode: Callable[[bytes], str]) -> None:
    raw = bytes(range(32))

    key = MasterKey.from_environ({"QIAO_MASTER_KEY": encode(raw)})

    assert key == MasterKey(raw)


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        bytes(31).hex(),
        "z" * 64,
        "not a key at all!",
    ],
)
def test_master_from_env_rejects_wrong_length_without_echoing_it(text: str) -> None:
    with pytest.raises(SecretError, match="QIAO_MASTER_KEY must be 32 bytes") as info:
        MasterKey.from_environ({"QIAO_MASTER_KEY": text})

    assert text not in str(info.value)


def test_master_from_environ_unset_or_ambiguous(tmp_path: Path) -> None:
    assert MasterKey.from_environ({}) is None
    with pytest.raises(SecretError, match="not both"):
        MasterKey.from_environ({"QIAO_MASTER_KEY": "x", "QIAO_MASTER_KEY_FILE": str(tmp_path)})


def test_master_file_written_0600_and_read_back(tmp_path: Path) -> None:
    key, path = MasterKey.generate(), tmp_path / "master.key"

    key.write_file(path)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKey.from_environ({"QIAO_MASTER_KEY_FILE": str(path)}) == key


def test_master_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    MasterKey.generate().write_file(path)
    before = path.read_bytes()

    with pytest.raises(SecretError, match="already exists"):
        MasterKey.generate().write_file(path)

    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_master_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    key, path = MasterKey.generate(), tmp_path / "master.key"
    key.write_file(path)
    path.chmod(mode)

    with pytest.raises(SecretError, match=f"permissions {mode:04o}.*chmod 600") as info:
        MasterKey.from_file(path)

    assert key.to_text() not in str(info.value)


def test_master_file_0400_accepted_and_missing_file_explained(tmp_path: Path) -> None:
    key, path = MasterKey.generate(), tmp_path / "master.key"
    key.write_file(path)
    path.chmod(0o400)

    assert MasterKey.from_file(path) == key
    with pytest.raises(SecretError, match="cannot read master key file"):
        MasterKey.from_file(tmp_path / "missing.key")


def test_master_file_with_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"\xff" * 32)
    path.chmod(0o600)

    with pytest.raises(SecretError, match="base64 or hex"):
        MasterKey.from_file(path)


# --- hints


@pytest.mark.parametrize(
    ("plaintext", "expected"),
    [
        (PROVIDER_KEY, "sk-…Kr0w"),
        ("sk-ant-api03-" + "a" * 80 + "ab12", "sk-…ab12"),
        ("AIzaSyD" + "x" * 28 + "9zQ1", "AIz…9zQ1"),
        ("gsk_" + "y" * 48 + "c0de", "gsk…c0de"),
        ("longprefix-" + "z" * 30 + "tail", "lon…tail"),
        ("sk-0123456789abcdefgh", "sk-…efgh"),
        ("sk-0123456789abcdefg", "sk-…defg"),
        ("sk-0123456789abcdef", "…"),
        ("short", "…"),
        ("", "…"),
    ],
)
def test_hint(plaintext: str, expected: str) -> None:
    assert hint(plaintext) == expected


# --- secrets at rest


def _windows(text: str, width: int = 12) -> list[bytes]:
    return [text[i : i + width].encode() for i in range(len(text) - width + 1)]


def test_no_provider_key_in_plaintext_in_the_database_or_wal(tmp_path: Path) -> None:
    vault = Vault(MasterKey.generate())
    secret = vault.seal("openai", PROVIDER_KEY)
    db = tmp_path / "qiao.db"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        conn.execute("PRAGMA wal_autocheckpoint=0")  # keep the row in the WAL for the scan
        conn.execute(
            "CREATE TABLE provider_secrets (name TEXT PRIMARY KEY, ciphertext BLOB, nonce BLOB,"
            " key_id TEXT, hint TEXT, updated_at TEXT)"
        )
        conn.execute(
            "INSERT INTO provider_secrets VALUES (?, ?, ?, ?, ?, ?)",
            (*dataclasses.astuple(secret)[:5], datetime.now(UTC).isoformat()),
        )
        conn.commit()
        row = conn.execute("SELECT name, ciphertext, nonce, key_id, hint FROM provider_secrets")
        stored = ProviderSecret(*row.fetchone())
        wal = db.with_name(db.name + "-wal").read_bytes()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        main = db.read_bytes()
    finally:
        conn.close()

    assert vault.open(stored) == PROVIDER_KEY
    assert secret.ciphertext in wal and secret.ciphertext in main  # the scan sees the row
    assert secret.hint.encode() in wal and secret.hint.encode() in main
    encodings = [
        *_windows(PROVIDER_KEY),
        base64.b64encode(PROVIDER_KEY.encode()),
        base64.urlsafe_b64encode(PROVIDER_KEY.encode()),
        PROVIDER_KEY.encode().hex().encode(),
        PROVIDER_KEY.encode("utf-16-le"),
    ]
    for blob in (wal, main):
        for needle in encodings:
            assert needle not in blob
