"""Verify an RS256 JWT with a public key (for the fake token endpoint)."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_rs256(token: str, public_key_pem: bytes) -> dict[str, Any]:
    header, claims, signature = token.split(".")
    key = serialization.load_pem_public_key(public_key_pem)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(_b64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    assert json.loads(_b64(header))["alg"] == "RS256"
    return dict(json.loads(_b64(claims)))
