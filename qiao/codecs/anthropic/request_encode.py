"""Canonical :class:`Request` -> Anthropic ``POST /v1/messages`` body (Anthropic as the provider).

The drop and refuse rules are listed in the package docstring; the tables below are the code.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from ...canonical import Message, Request, ResponseFormat, Text, Tool, ToolChoice, WebSearch
from ...errors import InvalidRequest
from ._wire import (
    Block,
    MessageParam,
    MessagesRequest,
    Metadata,
    OutputConfig,
    OutputFormat,
    ThinkingParam,
    ToolChoiceParam,
    ToolParam,
    WebSearchToolParam,
)
from .blocks import request_block, text_block

# canonical field -> Anthropic field (scalars not listed keep their name)
RENAMES = {
    "stop": "stop_sequences",
    "user": "metadata.user_id",
    "Tool.parameters": "tools[].input_schema",
    "response_format (json_schema)": "output_config.format",
    "reasoning": "thinking",
    "tool_choice.parallel=False": "tool_choice.disable_parallel_tool_use=true",
}
# canonical fields Anthropic has no place for: dropped
DROPPED = (
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "metadata",
    "stream_usage",
    "Message.name",
    "Image.detail",
    "ResponseFormat.name",
    "ResponseFormat.strict",
    "ToolCall.signature",
    "ToolResult.name",
)
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens
MIN_THINKING_BUDGET = 1024  # Anthropic: budget_tokens >= 1024 and < max_tokens
EFFORT_BUDGET = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32768,
    "max": 65536,
}
EFFORT_OFF = "none"  # OpenAI reasoning_effort "none" -> thinking disabled
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0..1; larger values are clamped
THINKING_MIN_TOP_P = 0.95  # with thinking on Anthropic accepts top_p only in 0.95..1
WEB_SEARCH_TYPE: Literal["web_search_20250305"] = "web_search_20250305"
WEB_SEARCH_NAME: Literal["web_search"] = "web_search"  # a function of that name wins

_TOOL_CHOICE: dict[str, Literal["auto", "any", "none", "tool"]] = {
    "auto": "auto",
    "required": "any",
    "none": "none",
    "tool": "tool",
}


def encode_request(req: Request, model: str) -> dict[str, Any]:
    if req.n != 1:
        raise InvalidRequest("n > 1 is not supported by Anthropic", param="n")
    leading, messages = _split_leading_system(req.messages)
    max_tokens, thinking = _thinking(req)
    body = MessagesRequest(model=model, max_tokens=max_tokens, messages=_messages(messages))
    system = [text_block(t) for t in [*req.system, *leading] if t.text]
    if system:
        body["system"] = system
    tools: list[ToolParam | WebSearchToolParam] = [_tool(t) for t in req.tools]
    if req.web_search is not None and not any(t.name == WEB_SEARCH_NAME for t in req.tools):
        tools.append(_web_search(req.web_search))
    if tools:
        body["tools"] = tools
        if req.tool_choice is not None:
            body["tool_choice"] = _tool_choice(req.tool_choice)
    if thinking is not None:
        body["thinking"] = thinking
    output = _output_config(req.response_format)
    if output is not None:
        body["output_config"] = output
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    _sampling(body, req, thinking_on=thinking is not None and thinking["type"] != "disabled")
    if req.user is not None:
        body["metadata"] = Metadata(user_id=req.user)
    if req.stream:
        body["stream"] = True
    return cast(dict[str, Any], body)


# ----------------------------------------------------------------------------- messages


def _split_leading_system(messages: list[Message]) -> tuple[list[Text], list[Message]]:
    """System messages before the first turn join the top-level ``system``."""
    first = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    texts = [
        _system_text(part, f"messages[{i}].parts[{j}]")
        for i in range(first)
        for j, part in enumerate(messages[i].parts)
    ]
    return texts, messages[first:]


def _system_text(part: object, param: str) -> Text:
    if not isinstance(part, Text):
        raise InvalidRequest(f"{param}: a system message may hold only text", param=param)
    return part


def _messages(messages: list[Message]) -> list[MessageParam]:
    """Tool messages become tool_result blocks of a user turn; a run of them and the user
    message right after share one turn, results first (Anthropic's rule)."""
    out: list[MessageParam] = []
    results_open = False  # the last turn holds tool results that a user message may join
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        blocks = _blocks(msg, param)
        if msg.role == "system":
            for j, part in enumerate(msg.parts):
                _system_text(part, f"{param}.parts[{j}]")
            if blocks:
                out.append(MessageParam(role="system", content=blocks))
        elif msg.role == "assistant":
            if blocks:  # a turn left empty by the drop rules is left out
                out.append(MessageParam(role="assistant", content=blocks))
        elif results_open:
            out[-1]["content"].extend(blocks)
        else:
            out.append(MessageParam(role="user", content=blocks))
        results_open = msg.role == "tool"
    for turn in out:
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")  # stable
    return out


def _blocks(msg: Message, param: str) -> list[Block]:
    blocks = (request_block(p, f"{param}.parts[{j}]") for j, p in enumerate(msg.parts))
    return [b for b in blocks if b is not None]


# ----------------------------------------------------------------------------- tools


def _tool(tool: Tool) -> ToolParam:
    schema = tool.parameters or {"type": "object", "properties": {}}
    out = ToolParam(name=tool.name, input_schema=schema)
    if tool.description is not None:
        out["description"] = tool.description
    if tool.strict is not None:
        out["strict"] = tool.strict
    return out


def _web_search(search: WebSearch) -> WebSearchToolParam:
    out = WebSearchToolParam(type=WEB_SEARCH_TYPE, name=WEB_SEARCH_NAME)
    if search.allowed_domains:
        out["allowed_domains"] = list(search.allowed_domains)
    if search.user_location:
        out["user_location"] = {"type": "approximate", **search.user_location}
    return out


def _tool_choice(choice: ToolChoice) -> ToolChoiceParam:
    out = ToolChoiceParam(type=_TOOL_CHOICE[choice.mode])
    if choice.mode == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice names no tool", param="tool_choice")
        out["name"] = choice.name
    if choice.parallel is not None and choice.mode != "none":
        out["disable_parallel_tool_use"] = not choice.parallel
    return out


def _forced_tool(req: Request) -> bool:
    return (
        bool(req.tools)
        and req.tool_choice is not None
        and req.tool_choice.mode
        in (
            "required",
            "tool",
        )
    )


# ----------------------------------------------------------------------------- the rest


def _thinking(req: Request) -> tuple[int, ThinkingParam | None]:
    """(max_tokens, thinking) — see the reasoning rules in the package docstring."""
    max_tokens = DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
    cfg = req.reasoning
    if cfg is None:
        return max_tokens, None
    if cfg.enabled is False or cfg.effort == EFFORT_OFF:
        return max_tokens, ThinkingParam(type="disabled")
    if _forced_tool(req):  # Anthropic refuses thinking with a forced tool: the tool wins
        return max_tokens, None
    budget = cfg.budget_tokens if cfg.budget_tokens is not None else _effort_budget(cfg.effort)
    if budget is None:
        if not cfg.enabled:
            return max_tokens, None
        thinking = ThinkingParam(type="adaptive")
    else:
        budget = max(budget, MIN_THINKING_BUDGET)
        if req.max_tokens is None and budget >= max_tokens:
            max_tokens = budget + DEFAULT_MAX_TOKENS
        budget = min(budget, max_tokens - 1)
        if budget < MIN_THINKING_BUDGET:  # no room for thinking within the caller's max_tokens
            return max_tokens, None
        thinking = ThinkingParam(type="enabled", budget_tokens=budget)
    if not cfg.include:
        thinking["display"] = "omitted"
    return max_tokens, thinking


def _effort_budget(effort: str | None) -> int | None:
    if effort is None:
        return None
    if effort not in EFFORT_BUDGET:
        known = ", ".join(EFFORT_BUDGET)
        message = f"reasoning effort {effort!r} has no Anthropic equivalent (use {known})"
        raise InvalidRequest(message, param="reasoning_effort")
    return EFFORT_BUDGET[effort]


def _output_config(fmt: ResponseFormat | None) -> OutputConfig | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        message = "response_format json_object is not supported by Anthropic; use json_schema"
        raise InvalidRequest(message, param="response_format")
    if fmt.schema is None:
        raise InvalidRequest("response_format json_schema needs a schema", param="response_format")
    return OutputConfig(format=OutputFormat(type="json_schema", schema=fmt.schema))


def _sampling(body: MessagesRequest, req: Request, *, thinking_on: bool) -> None:
    """Forwarded as given (the provider adapter strips them per anthropic-version), except
    what Anthropic refuses alongside thinking."""
    if req.temperature is not None and not thinking_on:
        body["temperature"] = min(req.temperature, MAX_TEMPERATURE)
    if req.top_k is not None and not thinking_on:
        body["top_k"] = req.top_k
    if req.top_p is not None and (not thinking_on or req.top_p >= THINKING_MIN_TOP_P):
        body["top_p"] = req.top_p
