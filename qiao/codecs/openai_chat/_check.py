"""Type checks of client JSON that raise :class:`InvalidRequest` naming the parameter."""

from __future__ import annotations

from typing import Any

from ...canonical import Tool
from ...errors import InvalidRequest

__all__ = [
    "function_tool",
    "get_bool",
    "get_dict",
    "get_int",
    "get_list",
    "get_number",
    "get_str",
    "require_str",
]


def _bad(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"'{param}' must be {what}.", param=param, code="invalid_type")


def get_str(obj: dict[str, Any], key: str, param: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _bad(param, "a string")


def require_str(obj: dict[str, Any], key: str, param: str) -> str:
    value = obj.get(key)
    if isinstance(value, str) and value:
        return value
    raise InvalidRequest(f"'{param}' is required and must be a non-empty string.", param=param)


def get_bool(obj: dict[str, Any], key: str, param: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _bad(param, "a boolean")


def get_int(obj: dict[str, Any], key: str, param: str, *, minimum: int = 0) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.0 from JavaScript clients
    if isinstance(value, int) and not isinstance(value, bool):
        if value < minimum:
            raise InvalidRequest(f"'{param}' must be at least {minimum}.", param=param)
        return value
    raise _bad(param, "an integer")


def get_number(obj: dict[str, Any], key: str, param: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if isinstance(value, int) else value
    raise _bad(param, "a number")


def get_dict(obj: dict[str, Any], key: str, param: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise _bad(param, "an object")


def get_list(obj: dict[str, Any], key: str, param: str) -> list[Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, list):
        return value
    raise _bad(param, "an array")


def function_tool(item: dict[str, Any], param: str, name: str | None = None) -> Tool:
    """A function tool declaration (``name``, ``description``, ``strict``, ``parameters``), as
    chat completions and the Responses API both write it; ``name`` overrides the item's."""
    tool = Tool(
        name=name or require_str(item, "name", f"{param}.name"),
        description=get_str(item, "description", f"{param}.description"),
        strict=get_bool(item, "strict", f"{param}.strict"),
    )
    parameters = get_dict(item, "parameters", f"{param}.parameters")
    if parameters is not None:
        tool.parameters = parameters
    return tool
