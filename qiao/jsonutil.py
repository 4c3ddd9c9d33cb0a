"""Strict JSON for request bodies.

RFC 8259 only: no NaN/Infinity, no lone surrogates, no duplicate keys (a
duplicate ``model`` key is a classic parser-differential trick: we would check
one value and the upstream would use the other), valid UTF-8, and at most
:data:`MAX_DEPTH` levels of nesting (deeper bodies would exhaust the recursion of
every later reader; no LLM request needs them). Every check is linear in the body.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import InvalidRequest

__all__ = ["MAX_DEPTH", "dumps", "loads_strict"]

dumps = orjson.dumps
MAX_DEPTH = 128


class _DuplicateKey(ValueError):
    pass


def _check_pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1:
        seen = {k for k, _ in pairs}
        if len(seen) != len(pairs):
            once: set[str] = set()
            for k, _ in pairs:  # the first repeated name, in one pass
                if k in once:
                    raise _DuplicateKey(k)
                once.add(k)


_dup_scanner = json.JSONDecoder(object_pairs_hook=_check_pairs)


def loads_strict(body: bytes) -> Any:
    """Parse ``body`` or raise :class:`InvalidRequest` saying what is wrong."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"Request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if isinstance(value, dict | list) and body.count(b"{") + body.count(b"[") > MAX_DEPTH:
        _check_depth(value)  # only bodies with enough brackets could be too deep
    # Any two members may repeat a name; JSON allows whitespace before the ':', so the only
    # sound cheap pre-test is the colon count (a test on '":' let '"model" : …' pairs through).
    if isinstance(value, dict | list) and body.count(b":") > 1:
        try:
            _dup_scanner.decode(body.decode("utf-8"))
        except _DuplicateKey as exc:
            raise InvalidRequest(
                f"Request body has a duplicate key: {str(exc)!r}", code="invalid_json"
            ) from None
    return value


def _check_depth(value: Any) -> None:
    """Iteratively (never recursion): a 400 if containers nest deeper than MAX_DEPTH."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(
                f"Request body nests deeper than {MAX_DEPTH} levels.", code="invalid_json"
            )
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
