"""A client's chat.completions body → canonical :class:`Request` (client role)."""

from __future__ import annotations

from typing import Any, Literal

from ...canonical import ReasoningConfig, Request, ResponseFormat, Tool, ToolChoice
from ...errors import InvalidRequest
from ._check import (
    function_tool,
    get_bool,
    get_dict,
    get_int,
    get_list,
    get_number,
    get_str,
    require_str,
)
from ._messages_in import decode_messages

__all__ = ["DROPPED", "REFUSED", "decode_request"]

# Wire parameter → canonical field, for the plain numbers. The first present wins.
_COUNTS = (("max_completion_tokens", "max_tokens"), ("max_tokens", "max_tokens"))
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS = ("seed", "top_k")  # top_k: a vLLM / Qwen / SiliconFlow extension

# Parameters whose effect no other protocol can reproduce: refused when they would matter.
REFUSED: dict[str, str] = {
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit bias",
    "audio": "audio output",
    "modalities": "output modalities other than text",
    "prediction": "predicted outputs",
    "web_search_options": "built-in web search",
    "moderation": "OpenAI moderation settings",
}
# Harmless OpenAI-only knobs, dropped when translating (as are unknown vendor extensions).
DROPPED = frozenset(
    {
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "verbosity",
        "stream_options.include_obfuscation",
    }
)
# Values of a refused parameter that ask for nothing (what SDK wrappers send by default).
_INERT: tuple[object, ...] = (None, False, 0, {}, [], ["text"])
_INERT_BY_KEY: dict[str, tuple[object, ...]] = {"web_search_options": (None,)}  # {} = search
_TOOL_MODES: dict[str, Literal["none", "auto", "required"]] = {
    "none": "none",
    "auto": "auto",
    "required": "required",
}


def decode_request(
    body: dict[str, Any], *, model: str | None = None, stream: bool | None = None
) -> Request:
    """A chat.completions request body as canonical. Raises :class:`InvalidRequest`."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for key, what in REFUSED.items():
        if body.get(key) not in _INERT_BY_KEY.get(key, _INERT):
            raise InvalidRequest(
                f"'{key}' cannot be honoured: {what} cannot be translated to this model's "
                "provider. Remove it, or use a model served over the OpenAI protocol.",
                param=key,
                code="unsupported_parameter",
            )
    system, messages = decode_messages(body.get("messages"))
    wants_stream = get_bool(body, "stream", "stream") if stream is None else stream
    stream_options = get_dict(body, "stream_options", "stream_options") or {}
    request = Request(
        model=model or require_str(body, "model", "model"),
        messages=messages,
        system=system,
        tools=_tools(body),
        tool_choice=_tool_choice(body),
        stop=_stop(body.get("stop")),
        n=get_int(body, "n", "n", minimum=1) or 1,
        stream=bool(wants_stream),
        stream_usage=bool(get_bool(stream_options, "include_usage", "stream_options")),
        response_format=_response_format(get_dict(body, "response_format", "response_format")),
        reasoning=_reasoning(body),
        user=get_str(body, "safety_identifier", "safety_identifier")
        or get_str(body, "user", "user"),
        metadata=get_dict(body, "metadata", "metadata"),
    )
    _scalars(body, request)
    return request


def _scalars(body: dict[str, Any], request: Request) -> None:
    for key, field in _COUNTS:
        value = get_int(body, key, key, minimum=1)
        if value is not None and getattr(request, field) is None:
            setattr(request, field, value)
    for key in _NUMBERS:
        setattr(request, key, get_number(body, key, key))
    for key in _INTEGERS:
        setattr(request, key, get_int(body, key, key, minimum=-(2**63)))


def _stop(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise InvalidRequest("'stop' must be a string or an array of strings.", param="stop")


# ----------------------------------------------------------------------------- tools


def _tools(body: dict[str, Any]) -> list[Tool]:
    tools = []
    for i, item in enumerate(get_list(body, "tools", "tools") or []):
        param = f"tools[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{param}' must be an object.", param=param)
        kind = item.get("type")
        if kind != "function":
            raise InvalidRequest(
                f"'{param}.type' {kind!r} cannot be translated: only function tools can.",
                param=f"{param}.type",
                code="unsupported_parameter",
            )
        function = get_dict(item, "function", f"{param}.function") or {}
        tools.append(function_tool(function, f"{param}.function"))
    for i, function in enumerate(get_list(body, "functions", "functions") or []):
        if not isinstance(function, dict):
            raise InvalidRequest(f"'functions[{i}]' must be an object.", param=f"functions[{i}]")
        tools.append(function_tool(function, f"functions[{i}]"))
    return tools


def _tool_choice(body: dict[str, Any]) -> ToolChoice | None:
    choice = _choice(body.get("tool_choice"), "tool_choice", "function")
    if choice is None:
        choice = _choice(body.get("function_call"), "function_call", None)
    parallel = get_bool(body, "parallel_tool_calls", "parallel_tool_calls")
    if parallel is not None:
        choice = choice or ToolChoice("auto")
        choice.parallel = parallel
    return choice


def _choice(value: object, param: str, kind: str | None) -> ToolChoice | None:
    """``tool_choice`` (kind "function") or the deprecated ``function_call`` (kind None)."""
    if value is None:
        return None
    if isinstance(value, str) and value in _TOOL_MODES and (kind or value != "required"):
        return ToolChoice(_TOOL_MODES[value])
    if isinstance(value, dict) and kind is None:
        return ToolChoice("tool", name=require_str(value, "name", f"{param}.name"))
    if isinstance(value, dict) and value.get("type") == kind:
        function = get_dict(value, "function", f"{param}.function") or {}
        return ToolChoice("tool", name=require_str(function, "name", f"{param}.function.name"))
    raise InvalidRequest(
        f"'{param}' must be 'none', 'auto', 'required' or a function choice; "
        "other choices (allowed_tools, custom) cannot be translated.",
        param=param,
    )


# ----------------------------------------------------------------------------- formats


def _response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise InvalidRequest(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
            param="response_format.type",
        )
    spec = get_dict(value, "json_schema", "response_format.json_schema") or {}
    return ResponseFormat(
        "json_schema",
        schema=get_dict(spec, "schema", "response_format.json_schema.schema"),
        name=get_str(spec, "name", "response_format.json_schema.name"),
        strict=get_bool(spec, "strict", "response_format.json_schema.strict"),
    )


def _reasoning(body: dict[str, Any]) -> ReasoningConfig | None:
    """``reasoning_effort``, and the vendor switches clients of Qwen/DeepSeek/GLM send
    (``enable_thinking``, ``thinking_budget``, ``thinking: {type}``)."""
    effort = get_str(body, "reasoning_effort", "reasoning_effort")
    enabled = get_bool(body, "enable_thinking", "enable_thinking")
    budget = get_int(body, "thinking_budget", "thinking_budget", minimum=0)
    thinking = get_dict(body, "thinking", "thinking") or {}
    kind = thinking.get("type")
    if kind in ("enabled", "disabled"):
        enabled = kind == "enabled"
    budget = get_int(thinking, "budget_tokens", "thinking.budget_tokens") or budget
    if effort == "none":
        effort, enabled = None, False
    elif effort is not None:
        enabled = True if enabled is None else enabled
    if effort is None and enabled is None and budget is None:
        return None
    return ReasoningConfig(enabled=enabled, effort=effort, budget_tokens=budget)
