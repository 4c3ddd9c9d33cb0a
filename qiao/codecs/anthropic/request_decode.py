"""Anthropic ``POST /v1/messages`` body -> canonical :class:`Request` (Anthropic as the client).

The drop and refuse rules are listed in the package docstring; the tables below are the code.
"""

from __future__ import annotations

from typing import Any, Literal

from ...canonical import (
    Message,
    Part,
    ReasoningConfig,
    Request,
    ResponseFormat,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
)
from . import _check as check
from .blocks import (
    ASSISTANT,
    MEDIA,
    SYSTEM,
    block_type,
    decode_block,
    decode_content,
    decode_tool_result,
)

# Claude Code fields with no canonical meaning: dropped on the way to a non-Anthropic upstream.
# (Unknown fields are dropped too, so a newer client keeps working.)
DROPPED_FIELDS = frozenset(
    {
        "betas",
        "cache_control",
        "compaction",
        "container",
        "context_management",
        "diagnostics",
        "fallbacks",
        "inference_geo",
        "service_tier",
        "speed",
        "thread",
        "user_profile_id",
        "workspace_id",
    }
)
# Fields whose loss would change the answer: refused when set.
REFUSED_FIELDS = {"mcp_servers": "MCP connectors work only with an Anthropic upstream"}
BILLING_HEADER = "x-anthropic-billing-header:"  # Claude Code's system block; dropped

_TOOL_CHOICE: dict[str, Literal["auto", "none", "required", "tool"]] = {
    "auto": "auto",
    "any": "required",
    "none": "none",
    "tool": "tool",
}


def decode_request(
    body: dict[str, Any], *, model: str | None = None, stream: bool | None = None
) -> Request:
    """Translate a Messages request; ``model``/``stream`` override the body."""
    check.obj(body, "body")
    _refuse(body)
    if stream is None:
        stream = bool(check.optional(body, "stream", "stream", check.boolean))
    output = check.optional(body, "output_config", "output_config", check.obj) or {}
    tools = check.optional(body, "tools", "tools", check.array) or []
    return Request(
        model=model or _model(body),
        messages=_messages(check.array(check.required(body, "messages", "messages"), "messages")),
        system=_system(body.get("system")),
        tools=[_tool(value, f"tools[{i}]") for i, value in enumerate(tools)],
        tool_choice=_tool_choice(body),
        max_tokens=check.integer(check.required(body, "max_tokens", "max_tokens"), "max_tokens"),
        temperature=check.optional(body, "temperature", "temperature", check.number),
        top_p=check.optional(body, "top_p", "top_p", check.number),
        top_k=check.optional(body, "top_k", "top_k", check.integer),
        stop=_stop(body),
        stream=stream,
        stream_usage=stream,  # Anthropic streams always carry usage
        response_format=_response_format(output),
        reasoning=_reasoning(body, output),
        user=_user(body),
    )


def _refuse(body: dict[str, Any]) -> None:
    for key, why in REFUSED_FIELDS.items():
        if body.get(key):
            raise check.bad(key, why)


def _model(body: dict[str, Any]) -> str:
    model = check.string(check.required(body, "model", "model"), "model")
    if not model:
        raise check.bad("model", "must not be empty")
    return model


def _system(value: object) -> list[Text]:
    if value is None:
        return []
    parts = decode_content(value, "system", SYSTEM)
    return [p for p in parts if isinstance(p, Text) and not p.text.startswith(BILLING_HEADER)]


# ----------------------------------------------------------------------------- messages


def _messages(raw: list[Any]) -> list[Message]:
    names: dict[str, str] = {}  # tool_use id -> tool name, to name the results
    out: list[Message] = []
    for i, value in enumerate(raw):
        out.extend(_message(value, f"messages[{i}]", names))
    return out


def _message(value: object, param: str, names: dict[str, str]) -> list[Message]:
    msg = check.obj(value, param)
    role = check.string(check.required(msg, "role", f"{param}.role"), f"{param}.role")
    content = check.required(msg, "content", f"{param}.content")
    if role == "assistant":
        parts = decode_content(content, f"{param}.content", ASSISTANT)
        names.update((p.id, p.name) for p in parts if isinstance(p, ToolCall))
        return [Message("assistant", parts)]
    if role == "system":
        return [Message("system", decode_content(content, f"{param}.content", SYSTEM))]
    if role == "user":
        return _user_turn(content, f"{param}.content", names)
    raise check.bad(f"{param}.role", f"expected 'user', 'assistant' or 'system', got {role!r}")


def _user_turn(content: object, param: str, names: dict[str, str]) -> list[Message]:
    """A user turn -> one ``tool`` message per tool_result (in order), then a user message with
    the rest of the turn, if any (OpenAI wants the tool messages right after the calls)."""
    if isinstance(content, str):
        return [Message("user", decode_content(content, param, MEDIA))]
    results: list[Message] = []
    rest: list[Part] = []
    for i, value in enumerate(check.array(content, param)):
        where = f"{param}[{i}]"
        if block_type(value) != "tool_result":
            rest.append(decode_block(value, where, MEDIA))
            continue
        result = decode_tool_result(check.obj(value, where), where, None)
        result.name = names.get(result.call_id)
        results.append(Message("tool", [result]))
    return [*results, Message("user", rest)] if rest or not results else results


# ----------------------------------------------------------------------------- tools


def _tool(value: object, param: str) -> Tool:
    tool = check.obj(value, param)
    kind = check.optional(tool, "type", f"{param}.type", check.string)
    if kind not in (None, "custom"):
        raise check.bad(
            f"{param}.type", f"server tool {kind!r} works only with an Anthropic upstream"
        )
    schema = check.required(tool, "input_schema", f"{param}.input_schema")
    return Tool(
        name=check.string(check.required(tool, "name", f"{param}.name"), f"{param}.name"),
        description=check.optional(tool, "description", f"{param}.description", check.string),
        parameters=check.obj(schema, f"{param}.input_schema"),
        strict=check.optional(tool, "strict", f"{param}.strict", check.boolean),
    )


def _tool_choice(body: dict[str, Any]) -> ToolChoice | None:
    choice = check.optional(body, "tool_choice", "tool_choice", check.obj)
    if choice is None:
        return None
    kind = check.string(check.required(choice, "type", "tool_choice.type"), "tool_choice.type")
    mode = _TOOL_CHOICE.get(kind)
    if mode is None:
        raise check.bad("tool_choice.type", f"expected auto, any, none or tool, got {kind!r}")
    name = None
    if mode == "tool":
        name = check.string(check.required(choice, "name", "tool_choice.name"), "tool_choice.name")
    param = "tool_choice.disable_parallel_tool_use"
    disable = check.optional(choice, "disable_parallel_tool_use", param, check.boolean)
    return ToolChoice(mode=mode, name=name, parallel=None if disable is None else not disable)


# ----------------------------------------------------------------------------- the rest


def _stop(body: dict[str, Any]) -> list[str]:
    stops = check.optional(body, "stop_sequences", "stop_sequences", check.array) or []
    return [check.string(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)]


def _reasoning(body: dict[str, Any], output: dict[str, Any]) -> ReasoningConfig | None:
    """``thinking`` and ``output_config.effort`` -> one ReasoningConfig."""
    effort = check.optional(output, "effort", "output_config.effort", check.string)
    thinking = check.optional(body, "thinking", "thinking", check.obj)
    if thinking is None:
        return None if effort is None else ReasoningConfig(effort=effort)
    kind = check.string(check.required(thinking, "type", "thinking.type"), "thinking.type")
    display = check.optional(thinking, "display", "thinking.display", check.string)
    include = display != "omitted"
    if kind == "enabled":
        param = "thinking.budget_tokens"
        budget = check.integer(check.required(thinking, "budget_tokens", param), param)
        return ReasoningConfig(enabled=True, effort=effort, budget_tokens=budget, include=include)
    if kind == "adaptive":
        return ReasoningConfig(enabled=True, effort=effort, include=include)
    if kind == "disabled":
        return ReasoningConfig(enabled=False, effort=effort)
    raise check.bad("thinking.type", f"expected enabled, adaptive or disabled, got {kind!r}")


def _response_format(output: dict[str, Any]) -> ResponseFormat | None:
    fmt = check.optional(output, "format", "output_config.format", check.obj)
    if fmt is None:
        return None
    kind = check.required(fmt, "type", "output_config.format.type")
    if kind != "json_schema":
        raise check.bad("output_config.format.type", f"expected 'json_schema', got {kind!r}")
    schema = check.required(fmt, "schema", "output_config.format.schema")
    return ResponseFormat(
        type="json_schema", schema=check.obj(schema, "output_config.format.schema")
    )


def _user(body: dict[str, Any]) -> str | None:
    metadata = check.optional(body, "metadata", "metadata", check.obj) or {}
    return check.optional(metadata, "user_id", "metadata.user_id", check.string)
