"""Canonical :class:`Request` → an upstream chat.completions body (provider role)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict, cast

from ...canonical import ReasoningConfig, Request, ResponseFormat, Tool, ToolChoice
from ...errors import InvalidRequest
from ._messages_out import WireMessage, encode_messages

__all__ = ["EncodeOptions", "encode_request"]

# Canonical field → wire parameter, for values copied as they are.
_RENAMES = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("user", "user"),
)
# A thinking budget (Anthropic/Gemini) as an effort: below the bound → that effort, else "high".
_EFFORT_BY_BUDGET = ((4096, "low"), (16384, "medium"))


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """What one OpenAI-compatible upstream accepts. The defaults suit most compatible
    providers; OpenAI itself wants ``EncodeOptions("max_completion_tokens", False, False)``."""

    # Where the output limit goes: OpenAI reasoning models accept only max_completion_tokens;
    # most compatible servers only know max_tokens.
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    # Send Reasoning parts back as assistant ``reasoning_content`` (DeepSeek/Kimi need it for
    # tool-call turns; OpenAI rejects the unknown field).
    reasoning_passback: bool = True
    # Send ``top_k`` (vLLM, Qwen, SiliconFlow take it; OpenAI rejects it).
    top_k: bool = True
    # Ask for the usage chunk when streaming (Qiao accounts usage).
    stream_usage: bool = True


_DEFAULT = EncodeOptions()


class _FunctionDef(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]
    strict: NotRequired[bool]


class _ToolDef(TypedDict):
    type: str
    function: _FunctionDef


class _Body(TypedDict, total=False):
    model: str
    messages: list[WireMessage]
    tools: list[_ToolDef]
    tool_choice: str | dict[str, Any]
    parallel_tool_calls: bool
    stop: list[str]
    n: int
    top_k: int
    response_format: dict[str, Any]
    reasoning_effort: str
    stream: bool
    stream_options: dict[str, bool]


def encode_request(req: Request, model: str, options: EncodeOptions = _DEFAULT) -> dict[str, Any]:
    """The upstream body for ``req``; ``model`` is the upstream's model name.
    Raises :class:`InvalidRequest` for content the upstream cannot take."""
    body: _Body = {
        "model": model,
        "messages": encode_messages(req, reasoning=options.reasoning_passback),
    }
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
        if req.tool_choice is not None:
            _tool_choice(req.tool_choice, body)
    if req.stop:
        body["stop"] = list(req.stop)
    if req.n != 1:
        body["n"] = req.n
    if req.top_k is not None and options.top_k:
        body["top_k"] = req.top_k
    if req.response_format is not None:
        body["response_format"] = _response_format(req.response_format)
    effort = _effort(req.reasoning)
    if effort is not None:
        body["reasoning_effort"] = effort
    if req.stream:
        body["stream"] = True
        if options.stream_usage:
            body["stream_options"] = {"include_usage": True}
    out = cast(dict[str, Any], body)
    if req.max_tokens is not None:
        out[options.max_tokens_param] = req.max_tokens
    for field, param in _RENAMES:
        value = getattr(req, field)
        if value is not None:
            out[param] = value
    return out


def _tool(tool: Tool) -> _ToolDef:
    function: _FunctionDef = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice, body: _Body) -> None:
    if choice.mode == "tool":
        if not choice.name:
            raise InvalidRequest("A forced tool choice needs a tool name.", param="tool_choice")
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        body["tool_choice"] = choice.mode
    if choice.parallel is not None:
        body["parallel_tool_calls"] = choice.parallel


def _response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    spec: dict[str, Any] = {"name": fmt.name or "response"}  # OpenAI requires a name
    if fmt.schema is not None:
        spec["schema"] = fmt.schema
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


def _effort(config: ReasoningConfig | None) -> str | None:
    """``reasoning_effort``: the effort asked; "enabled" with a budget → an effort by size,
    without one → "medium"; disabled or unsaid → omitted (several compatible providers and
    OpenAI's older models refuse "none")."""
    if config is None or config.enabled is False:
        return None
    if config.effort:
        return config.effort
    if not config.enabled:
        return None
    budget = config.budget_tokens
    if budget is None:
        return "medium"
    return next((effort for bound, effort in _EFFORT_BY_BUDGET if budget < bound), "high")
