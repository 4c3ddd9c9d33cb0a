"""Canonical ``Request`` → a GenerateContentRequest body for a Gemini upstream."""

from __future__ import annotations

import re
from typing import Final, TypedDict

import orjson

from ...canonical import (
    Document,
    Image,
    Message,
    Part,
    Reasoning,
    ReasoningConfig,
    Request,
    ResponseFormat,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from ...errors import InvalidRequest
from ._common import GEN_NUMBERS, SKIP_SIGNATURE, gemini_signature
from ._parts_out import GContent, GFunctionResponse, GPart, call_part, media_out

_MAX_STOP: Final = 5
_MODES: Final = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}
# Gemini 1.x/2.x take a thinking budget; later models a thinking level.
_BUDGET_MODELS: Final = re.compile(r"gemini-[12][.-]")
_EFFORT_BUDGET: Final = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_EFFORT_LEVEL: Final = {"minimal": "LOW", "low": "LOW", "medium": "HIGH", "high": "HIGH"}
_EFFORT_MAX: Final = frozenset({"xhigh", "max"})  # budget -1 (dynamic) / level HIGH
_SYSTEM_NOTE: Final = "System: "


class GFunctionDeclaration(TypedDict, total=False):
    name: str
    description: str
    parametersJsonSchema: dict[str, object]


class GTool(TypedDict, total=False):
    functionDeclarations: list[GFunctionDeclaration]
    googleSearch: dict[str, object]  # Gemini's own search (grounding); it takes no options


class GFunctionCallingConfig(TypedDict, total=False):
    mode: str
    allowedFunctionNames: list[str]


class GToolConfig(TypedDict):
    functionCallingConfig: GFunctionCallingConfig


class GThinkingConfig(TypedDict, total=False):
    includeThoughts: bool
    thinkingBudget: int
    thinkingLevel: str


class GRequest(TypedDict, total=False):
    contents: list[GContent]
    systemInstruction: GContent
    tools: list[GTool]
    toolConfig: GToolConfig
    generationConfig: dict[str, object]


def encode_request(req: Request, model: str) -> dict[str, object]:
    """The body only; the provider adapter builds the URL (model, stream) and headers."""
    system = [GPart(text=t.text) for t in req.system]
    body = GRequest(contents=_contents(req.messages, system))
    if system:
        body["systemInstruction"] = GContent(parts=system)
    if req.tools:
        body["tools"] = [GTool(functionDeclarations=[_declaration(t) for t in req.tools])]
        if req.tool_choice is not None:
            body["toolConfig"] = _tool_config(req.tool_choice)
    elif req.tool_choice is not None and req.tool_choice.mode in ("required", "tool"):
        raise InvalidRequest("tool_choice requires a tool but no tools are given", param="tools")
    if req.web_search is not None:
        body.setdefault("tools", []).append(GTool(googleSearch={}))
    gen = _generation(req, model)
    if gen:
        body["generationConfig"] = gen
    return dict(body)


# ----------------------------------------------------------------------------- contents


def _contents(messages: list[Message], system: list[GPart]) -> list[GContent]:
    """Turns with roles user/model, consecutive same-role turns merged. Leading system
    messages join systemInstruction; a later one becomes a user turn "System: ..." in place."""
    names: dict[str, str] = {}  # call id → function name
    turns: list[GContent] = []
    for msg in messages:
        role, parts = _turn(msg, names, leading=not turns)
        if role == "system":
            system.extend(parts)
        elif parts and turns and turns[-1].get("role") == role:
            turns[-1].setdefault("parts", []).extend(parts)
        elif parts:
            turns.append(GContent(role=role, parts=parts))
    if not turns:
        raise InvalidRequest("there is no message to send", param="messages")
    for turn in turns:
        _sign_first_call(turn)
    return turns


def _turn(msg: Message, names: dict[str, str], leading: bool) -> tuple[str, list[GPart]]:
    if msg.role == "assistant":
        return "model", _model_parts(msg.parts, names)
    if msg.role == "system":
        texts = [p.text for p in msg.parts if isinstance(p, Text)]
        if len(texts) != len(msg.parts):
            raise InvalidRequest("a system message may hold only text", param="messages")
        if leading:
            return "system", [GPart(text=t) for t in texts]
        return "user", [GPart(text=_SYSTEM_NOTE + "\n".join(texts))]
    out: list[GPart] = []
    for part in msg.parts:
        out.extend(_user_part(part, names))
    return "user", out


def _user_part(part: Part, names: dict[str, str]) -> list[GPart]:
    if isinstance(part, Text):
        return [GPart(text=part.text)]
    if isinstance(part, Image | Document):
        return [media_out(part)]
    if isinstance(part, ToolResult):
        return _result_parts(part, names)
    if isinstance(part, Reasoning):
        return []
    raise InvalidRequest("a tool call may only stand in an assistant message", param="messages")


def _model_parts(parts: list[Part], names: dict[str, str]) -> list[GPart]:
    """Reasoning survives only with a Gemini signature (other providers' thinking is dropped);
    an empty one right before a text is that text's signature."""
    out: list[GPart] = []
    pending: str | None = None
    for i, part in enumerate(parts):
        if isinstance(part, Reasoning):
            sig = gemini_signature(part.signature)
            ahead = parts[i + 1] if i + 1 < len(parts) else None
            if sig is not None and not part.text and isinstance(ahead, Text):
                pending = sig
            elif sig is not None:
                out.append(GPart(text=part.text, thought=True, thoughtSignature=sig))
        elif isinstance(part, Text):
            out.append(
                GPart(text=part.text, thoughtSignature=pending)
                if pending
                else GPart(text=part.text)
            )
            pending = None
        elif isinstance(part, ToolCall):
            names[part.id] = part.name
            out.append(call_part(part, part.signature))
        elif isinstance(part, Image | Document):
            out.append(media_out(part))
        else:
            raise InvalidRequest(
                "a tool result cannot stand in an assistant message", param="messages"
            )
    return out


def _sign_first_call(turn: GContent) -> None:
    """Gemini 3 wants a signature on the first function call of each model turn (only that
    one, for parallel calls); a history from another protocol gets the documented skip value."""
    if turn.get("role") != "model":
        return
    for part in turn.get("parts", []):
        if "functionCall" in part:
            part.setdefault("thoughtSignature", SKIP_SIGNATURE)
            return


def _result_parts(result: ToolResult, names: dict[str, str]) -> list[GPart]:
    name = result.name or names.get(result.call_id)
    if not name:
        raise InvalidRequest(
            f"tool result {result.call_id!r} answers no earlier tool call; Gemini needs the "
            "function's name",
            param="messages",
        )
    text = "\n".join(c.text for c in result.content if isinstance(c, Text))
    response: dict[str, object] = {"error": text} if result.is_error else _response_object(text)
    fr = GFunctionResponse(id=result.call_id, name=name, response=response)
    media = [media_out(c) for c in result.content if not isinstance(c, Text)]
    return [GPart(functionResponse=fr), *media]


def _response_object(text: str) -> dict[str, object]:
    """A JSON object goes as itself, anything else as ``{"result": text}`` (Gemini wants an
    object; decode_request unwraps this shape, so one that looks like it is wrapped too)."""
    try:
        value = orjson.loads(text) if text.lstrip().startswith("{") else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        return {"result": text}
    if len(value) == 1 and isinstance(value.get("result", value.get("error")), str):
        return {"result": text}
    return value


# ----------------------------------------------------------------------------- tools, config


def _declaration(tool: Tool) -> GFunctionDeclaration:
    decl = GFunctionDeclaration(name=tool.name, parametersJsonSchema=tool.parameters)
    if tool.description is not None:
        decl["description"] = tool.description
    return decl


def _tool_config(choice: ToolChoice) -> GToolConfig:
    calling = GFunctionCallingConfig(mode=_MODES[choice.mode])
    if choice.mode == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice names no tool", param="tool_choice")
        calling["allowedFunctionNames"] = [choice.name]
    return GToolConfig(functionCallingConfig=calling)


def _generation(req: Request, model: str) -> dict[str, object]:
    gen: dict[str, object] = {}
    for field, key, _ in GEN_NUMBERS:
        value = getattr(req, field)
        if value is not None:
            gen[key] = value
    if req.n != 1:
        if req.n < 1:
            raise InvalidRequest("n must be at least 1", param="n")
        gen["candidateCount"] = req.n
    if len(req.stop) > _MAX_STOP:
        raise InvalidRequest(f"Gemini accepts at most {_MAX_STOP} stop sequences", param="stop")
    if req.stop:
        gen["stopSequences"] = list(req.stop)
    if req.response_format is not None:
        gen.update(_response_format(req.response_format))
    if req.reasoning is not None:
        gen["thinkingConfig"] = _thinking(req.reasoning, model)
    return gen


def _response_format(fmt: ResponseFormat) -> dict[str, object]:
    if fmt.type == "text":
        return {}
    if fmt.type == "json_schema" and fmt.schema is not None:
        return {"responseMimeType": "application/json", "responseJsonSchema": fmt.schema}
    return {"responseMimeType": "application/json"}


def _thinking(cfg: ReasoningConfig, model: str) -> GThinkingConfig:
    """enabled False → budget 0 (Gemini 2.5 Pro and 3 cannot turn thinking off and will say
    so); a budget wins over an effort; an effort is a budget for 1.x/2.x, a level after."""
    effort = cfg.effort.lower() if cfg.effort else None
    if cfg.enabled is False or effort == "none":
        return GThinkingConfig(includeThoughts=False, thinkingBudget=0)
    out = GThinkingConfig(includeThoughts=cfg.include)
    if cfg.budget_tokens is not None:
        out["thinkingBudget"] = cfg.budget_tokens
    elif effort is not None:
        if effort not in _EFFORT_LEVEL and effort not in _EFFORT_MAX:
            raise InvalidRequest(f"unknown reasoning effort {cfg.effort!r}", param="reasoning")
        if _BUDGET_MODELS.search(model):
            out["thinkingBudget"] = _EFFORT_BUDGET.get(effort, -1)
        else:
            out["thinkingLevel"] = _EFFORT_LEVEL.get(effort, "HIGH")
    elif cfg.enabled:
        out["thinkingBudget"] = -1
    return out
