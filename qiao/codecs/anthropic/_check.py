"""Type checks for untrusted Anthropic JSON, each failing with an ``InvalidRequest`` naming the
offending field as a path (``messages[2].content[0].source.data``).

The upstream-facing decoders reuse these and re-raise as ``UpstreamProtocolError``
(:func:`upstream`), so one set of checks serves both roles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ...errors import InvalidRequest, UpstreamProtocolError

T = TypeVar("T")

_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (str, "a string"),
    (int, "a number"),
    (float, "a number"),
    (list, "an array"),
    (dict, "an object"),
)


def kind(value: object) -> str:
    if value is None:
        return "null"
    return next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)


def bad(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _expected(param: str, what: str, value: object) -> InvalidRequest:
    return bad(param, f"expected {what}, got {kind(value)}")


def required(body: dict[str, Any], key: str, param: str) -> Any:
    if key not in body or body[key] is None:
        raise bad(param, "field required")
    return body[key]


def obj(value: object, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _expected(param, "an object", value)
    return value


def array(value: object, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise _expected(param, "an array", value)
    return value


def string(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise _expected(param, "a string", value)
    return value


def boolean(value: object, param: str) -> bool:
    if not isinstance(value, bool):
        raise _expected(param, "a boolean", value)
    return value


def integer(value: object, param: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _expected(param, "an integer", value)
    if value < minimum:
        raise bad(param, f"must be at least {minimum}, got {value}")
    return value


def number(value: object, param: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _expected(param, "a number", value)
    return float(value)


def optional(
    body: dict[str, Any], key: str, param: str, check: Callable[[object, str], T]
) -> T | None:
    """``check`` the field when it is present and not null."""
    value = body.get(key)
    return None if value is None else check(value, param)


@contextmanager
def upstream(what: str) -> Iterator[None]:
    """Re-raise a failed check on upstream data as ``UpstreamProtocolError``."""
    try:
        yield
    except InvalidRequest as exc:
        raise UpstreamProtocolError(f"Anthropic upstream sent an invalid {what}: {exc}") from None
