"""Provider keys at rest: the master key, AES-256-GCM sealing, rotation and masked hints.

The master key never comes from the database: it is read from ``QIAO_MASTER_KEY`` (base64 or
hex) or from the file named by ``QIAO_MASTER_KEY_FILE`` (refused if group/other may access it,
as ssh refuses a private key). A :class:`Vault` seals each provider key into a
:class:`~qiao.storage.models.ProviderSecret` whose associated data binds the secret's name, so a
ciphertext copied onto another name does not open. Secrets carry the ``key_id`` fingerprint of
the master that sealed them; rotation opens them with a previous master and seals them again
under the current one.

Every failure here is a :class:`SecretError`. Its message names the secret and the key
fingerprint, never the plaintext or any key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .storage.models import ProviderSecret

if TYPE_CHECKING:  # cryptography is imported when a vault is made: ~7 MB not spent otherwise
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILE_ENV",
    "MasterKey",
    "SecretError",
    "Vault",
    "hint",
]

MASTER_KEY_ENV = "QIAO_MASTER_KEY"
MASTER_KEY_FILE_ENV = "QIAO_MASTER_KEY_FILE"

_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12  # the GCM standard nonce; random per seal
_KEY_ID_DOMAIN = b"qiao/master-key-id/v1\x00"  # the fingerprint is never a plain hash of the key
_AAD_DOMAIN = b"qiao/provider-secret/v1\x00"
_HIDDEN = "…"
_HINT_MIN_LENGTH = 20  # shorter secrets would show too large a share of themselves


class SecretError(Exception):
    """A master key or sealed secret is missing, malformed, unprotected, wrong or tampered.

    An operator error (configuration or data), not a per-request failure, so it stands outside
    the :class:`~qiao.errors.QiaoError` tree. Messages never contain plaintext or key material.
    """


class MasterKey:
    """32 secret bytes. ``repr`` shows only the fingerprint ``key_id``."""

    __slots__ = ("_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise SecretError(f"a master key is {_KEY_BYTES} bytes, not {len(key)}")
        self._key = bytes(key)
        self.key_id = hashlib.sha256(_KEY_ID_DOMAIN + self._key).hexdigest()[:8]

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(_KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, *, source: str = MASTER_KEY_ENV) -> MasterKey:
        """Decode 64 hex digits or base64 (standard or URL-safe, padding optional).

        ``source`` names where the text came from, for the error message.
        """
        text = text.strip()
        if len(text) == 2 * _KEY_BYTES:
            try:
                return cls(bytes.fromhex(text))
            except ValueError:
                pass  # 64 characters that are not hex: not a 32-byte base64 either
        else:
            key = _b64decode(text)
            if key is not None and len(key) == _KEY_BYTES:
                return cls(key)
        raise SecretError(
            f"{source} must be {_KEY_BYTES} bytes written as base64 (44 characters) or hex "
            f"(64 characters); got {len(text)} characters that do not decode to that"
        )

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read a key written by :meth:`write_file` (or any file holding base64/hex text).

        Refused when group or others have any access to the file, as ssh refuses private keys.
        """
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise SecretError(f"cannot read master key file {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode  # the opened file, not a re-resolved path
            if os.name == "posix" and mode & 0o077:
                raise SecretError(
                    f"master key file {path} has permissions {stat.S_IMODE(mode):04o}, "
                    f"which are too open: it must not be accessible by group or others; "
                    f"run: chmod 600 {path}"
                )
            data = file.read(4096)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise SecretError(f"master key file {path} must hold base64 or hex text") from None
        return cls.from_text(text, source=f"master key file {path}")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> MasterKey | None:
        """The master named by ``QIAO_MASTER_KEY`` or ``QIAO_MASTER_KEY_FILE``; None if neither
        is set (provider keys then stay in config/env only). Both set is an error."""
        text = environ.get(MASTER_KEY_ENV)
        path = environ.get(MASTER_KEY_FILE_ENV)
        if text and path:
            raise SecretError(f"set {MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}, not both")
        if text:
            return cls.from_text(text, source=MASTER_KEY_ENV)
        if path:
            return cls.from_file(Path(path))
        return None

    def to_text(self) -> str:
        """Base64, for ``qiao keys init-master`` to print once."""
        return base64.b64encode(self._key).decode("ascii")

    def write_file(self, path: Path) -> None:
        """Create ``path`` with mode 0600 holding :meth:`to_text`; never overwrite a file."""
        try:  # O_EXCL: never follows a planted symlink, never clobbers an existing key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise SecretError(
                f"{path} already exists; refusing to overwrite a master key"
            ) from None
        except OSError as exc:
            raise SecretError(f"cannot create master key file {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(self.to_text() + "\n")

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.key_id)


class Vault:
    """Seals under ``master``; opens under ``master`` or any of ``previous`` (by ``key_id``)."""

    def __init__(self, master: MasterKey, previous: Sequence[MasterKey] = ()) -> None:
        self._master = master
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._sealer = AESGCM(master._key)
        self._ciphers: dict[str, list[AESGCM]] = {}
        seen: list[MasterKey] = []
        for key in (master, *previous):
            if key not in seen:
                seen.append(key)
                self._ciphers.setdefault(key.key_id, []).append(AESGCM(key._key))

    @property
    def key_id(self) -> str:
        """The fingerprint of the master new secrets are sealed under."""
        return self._master.key_id

    def seal(self, name: str, plaintext: str) -> ProviderSecret:
        if not name:
            raise SecretError("a provider secret needs a name")
        if not plaintext:
            raise SecretError(f"provider secret {name!r} is empty")
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._sealer.encrypt(nonce, plaintext.encode(), _aad(name))
        return ProviderSecret(
            name=name, ciphertext=ciphertext, nonce=nonce, key_id=self.key_id, hint=hint(plaintext)
        )

    def open(self, secret: ProviderSecret) -> str:
        ciphers = self._ciphers.get(secret.key_id)
        if not ciphers:
            raise SecretError(
                f"provider secret {secret.name!r} is sealed under master key {secret.key_id!r}, "
                f"which is not loaded (current: {self.key_id!r}); pass it as a previous key"
            )
        if len(secret.nonce) != _NONCE_BYTES:
            raise SecretError(f"provider secret {secret.name!r} has a malformed nonce")
        for cipher in ciphers:
            try:
                return cipher.decrypt(secret.nonce, secret.ciphertext, _aad(secret.name)).decode()
            except _invalid_tag():
                continue
        raise SecretError(
            f"provider secret {secret.name!r} failed authentication under master key "
            f"{secret.key_id!r}: wrong master key, or the stored record was altered"
        )

    def rotate(self, secrets: Iterable[ProviderSecret]) -> list[ProviderSecret]:
        """Re-seal every secret under the current master, keeping name and ``updated_at``.

        All are opened before any is sealed: one that cannot be opened fails the whole rotation.
        """
        opened = [(secret, self.open(secret)) for secret in secrets]
        return [
            replace(self.seal(secret.name, plaintext), updated_at=secret.updated_at)
            for secret, plaintext in opened
        ]


def hint(plaintext: str) -> str:
    """A mask for humans: ``sk-…ab12``. The prefix runs to a ``-`` within the first four
    characters, else is three characters; secrets under 20 characters are fully masked."""
    if len(plaintext) < _HINT_MIN_LENGTH:
        return _HIDDEN
    dash = plaintext.find("-", 0, 4)
    prefix = plaintext[: dash + 1] if dash > 0 else plaintext[:3]
    return f"{prefix}{_HIDDEN}{plaintext[-4:]}"


def _aad(name: str) -> bytes:
    return _AAD_DOMAIN + name.encode()


def _b64decode(text: str) -> bytes | None:
    padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag
