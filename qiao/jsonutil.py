"""Strict JSON for request bodies.

RFC 8259 only: no NaN/Infinity, no lone surrogates, no duplicate keys (a
duplicate ``model`` key is a classic parser-differential trick: we would check
one value and the upstream would use the other), valid UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import InvalidRequest

__all__ = ["dumps", "loads_strict"]

dumps = orjson.dumps


class _DuplicateKey(ValueError):
    pass


def _check_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1:
        seen = {k for k, _ in pairs}
        if len(seen) != len(pairs):
            names = [k for k, _ in pairs]
            dup = next(k for k in names if names.count(k) > 1)
            raise _DuplicateKey(dup)


_dup_scanner = json.JSONDecoder(object_pairs_hook=_check_pairs)


def loads_strict(body: bytes) -> Any:
    """Parse ``body`` or raise :class:`InvalidRequest` saying what is wrong."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if isinstance(value, dict | list) and body.count(b'":') > 1:
        try:
            _dup_scanner.decode(body.decode("utf-8"))
        except _DuplicateKey as exc:
            raise InvalidRequest(
                f"Request body has a duplicate key: {str(exc)!r}", code="invalid_json"
            ) from None
    return value
