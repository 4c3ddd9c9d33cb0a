"""The ``tools`` and ``tool_choice`` of a Responses API request, as canonical.

Besides flat ``function`` tools, Codex declares ``namespace`` tools (a named group of functions:
its MCP servers, its collaboration tools) and OpenAI's built-in ``web_search`` — neither of
which any other provider knows; refusing them would refuse Codex's every default request.

* A namespace's functions become flat tools named ``<namespace>__<name>``, kept to what OpenAI
  chat, Anthropic and Gemini all accept: ``[A-Za-z0-9_-]``, at most 64 characters, a letter or
  ``_`` first. A name that does not fit, or that another tool already has, ends in a short
  hash of (namespace, name) instead. The mapping rides in ``Request.tool_namespaces``, so the
  answer names each call as the client declared it (``namespace`` + ``name``), and a history
  ``function_call`` with a ``namespace`` goes upstream under its flat name. The namespace's
  own description is dropped; a ``custom`` tool inside it is refused like a top-level one.
* ``web_search`` (and its dated and ``_preview`` forms) → ``Request.web_search``, with
  ``filters.allowed_domains`` and ``user_location``; ``search_context_size``,
  ``external_web_access`` (the target's search has no cached-only mode) and
  ``search_content_types`` are dropped. Whether the target's own search is used or the tool
  is dropped is the provider's ``web_search`` setting (see :mod:`qiao.plan`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final, Literal

from ...canonical import Tool, ToolChoice, WebSearch
from ...errors import InvalidRequest
from ..openai_chat._check import function_tool, get_bool, get_dict, get_list, get_str, require_str

__all__ = ["ToolNames", "decode_tools", "tool_choice"]

NAME_MAX: Final = 64
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_HASH_LEN: Final = 8
_WEB_SEARCH: Final = frozenset(
    {"web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11"}
)
_LOCATION: Final = ("city", "region", "country", "timezone")
_TOOL_MODES: dict[str, Literal["none", "auto", "required"]] = {
    "none": "none",
    "auto": "auto",
    "required": "required",
}


class ToolNames:
    """Flat names for namespaced functions, unique among the request's tools."""

    __slots__ = ("_flat", "_taken", "origins")

    def __init__(self, plain: set[str]) -> None:
        self._taken = plain
        self._flat: dict[tuple[str, str], str] = {}
        self.origins: dict[str, tuple[str, str]] = {}

    def add(self, namespace: str, name: str) -> str:
        """The flat name of ``namespace``'s function ``name``, reserved for it."""
        key = (namespace, name)
        if key in self._flat:
            return self._flat[key]
        flat = _candidate(namespace, name)
        salt = 0
        while flat in self._taken:
            salt += 1
            flat = _hashed(_candidate(namespace, name), namespace, name, salt)
        self._taken.add(flat)
        self._flat[key] = flat
        self.origins[flat] = key
        return flat

    def flat(self, namespace: str, name: str) -> str:
        """The flat name of a namespaced call in the history: the declared one, else the name
        the function would have (a tool the client no longer declares)."""
        return self._flat.get((namespace, name)) or _candidate(namespace, name)


def _candidate(namespace: str, name: str) -> str:
    flat = _UNSAFE.sub("_", f"{namespace}__{name}")
    if not (flat[0].isalpha() or flat[0] == "_"):
        flat = "_" + flat
    return flat if len(flat) <= NAME_MAX else _hashed(flat, namespace, name, 0)


def _hashed(flat: str, namespace: str, name: str, salt: int) -> str:
    digest = hashlib.sha256(f"{namespace}\0{name}\0{salt}".encode()).hexdigest()[:_HASH_LEN]
    return f"{flat[: NAME_MAX - _HASH_LEN - 1]}_{digest}"


def decode_tools(body: dict[str, Any]) -> tuple[list[Tool], WebSearch | None, ToolNames]:
    """(function tools, web search, flat names of namespaced functions) of a request."""
    items = get_list(body, "tools", "tools") or []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"'tools[{i}]' must be an object.", param=f"tools[{i}]")
    plain = [t.get("name") for t in items if t.get("type") == "function"]
    names = ToolNames({n for n in plain if isinstance(n, str)})
    tools: list[Tool] = []
    search: WebSearch | None = None
    for i, item in enumerate(items):
        param, kind = f"tools[{i}]", item.get("type")
        if kind == "function":
            tools.append(function_tool(item, param))
        elif kind == "namespace":
            tools += _namespace(item, param, names)
        elif kind in _WEB_SEARCH:
            search = _web_search(item, param)
        else:
            raise _untranslatable(kind, param)
    return tools, search, names


def _namespace(item: dict[str, Any], param: str, names: ToolNames) -> list[Tool]:
    namespace = require_str(item, "name", f"{param}.name")
    tools = []
    for j, inner in enumerate(get_list(item, "tools", f"{param}.tools") or []):
        where = f"{param}.tools[{j}]"
        if not isinstance(inner, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        if inner.get("type") != "function":
            raise _untranslatable(inner.get("type"), where)
        flat = names.add(namespace, require_str(inner, "name", f"{where}.name"))
        tools.append(function_tool(inner, where, flat))
    return tools


def _web_search(item: dict[str, Any], param: str) -> WebSearch:
    filters = get_dict(item, "filters", f"{param}.filters") or {}
    domains = get_list(filters, "allowed_domains", f"{param}.filters.allowed_domains")
    if domains is not None and not all(isinstance(d, str) for d in domains):
        raise InvalidRequest(
            f"'{param}.filters.allowed_domains' must be an array of strings.",
            param=f"{param}.filters.allowed_domains",
        )
    where = get_dict(item, "user_location", f"{param}.user_location") or {}
    location = {k: v for k in _LOCATION if isinstance(v := where.get(k), str)}
    return WebSearch(allowed_domains=domains or None, user_location=location or None)


def _untranslatable(kind: object, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}.type' {kind!r} cannot be translated: only function, namespace and "
        "web_search tools can (other built-in tools such as file_search or computer run on "
        "OpenAI's servers; custom tools take free-form input no other provider has).",
        param=f"{param}.type",
        code="unsupported_parameter",
    )


def tool_choice(body: dict[str, Any], names: ToolNames) -> ToolChoice | None:
    value = body.get("tool_choice")
    choice: ToolChoice | None
    if value is None:
        choice = None
    elif isinstance(value, str) and value in _TOOL_MODES:
        choice = ToolChoice(_TOOL_MODES[value])
    elif isinstance(value, dict) and value.get("type") == "function":
        name = require_str(value, "name", "tool_choice.name")
        namespace = get_str(value, "namespace", "tool_choice.namespace")
        choice = ToolChoice("tool", name=names.flat(namespace, name) if namespace else name)
    else:
        raise InvalidRequest(
            "'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", "
            '"name": ...}; other choices (allowed_tools, built-in tools) cannot be translated.',
            param="tool_choice",
            code="unsupported_parameter",
        )
    parallel = get_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    if parallel is not None:
        choice = choice or ToolChoice("auto")
        choice.parallel = parallel
    return choice
