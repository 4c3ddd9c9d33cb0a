"""A Gemini client's GenerateContentRequest → canonical ``Request``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from ...canonical import (
    Message,
    Part,
    ReasoningConfig,
    Request,
    ResponseFormat,
    Role,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
)
from ...errors import InvalidRequest
from ...jsonutil import loads_strict
from ._common import GEN_NUMBERS, Node
from ._parts_in import MODEL_KINDS, CallIds, kind_of, media_part, model_part, tool_result

_TOP_KEYS: Final = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"}
)
# Accepted and dropped: the canonical model has no place for them (see the package docstring).
_TOP_DROPPED: Final = frozenset({"safetySettings", "labels"})
_GEN_KEYS: Final = frozenset(
    {gemini for _, gemini, _ in GEN_NUMBERS}
    | {"candidateCount", "stopSequences", "thinkingConfig", "responseMimeType"}
    | {"responseSchema", "responseJsonSchema", "responseModalities"}
)
_GEN_DROPPED: Final = frozenset(
    {"responseLogprobs", "logprobs", "mediaResolution", "enableEnhancedCivicAnswers"}
)
_MODES: Final = {"AUTO": "auto", "VALIDATED": "auto", "MODE_UNSPECIFIED": "auto", "NONE": "none"}


def decode_request(
    body: object, *, model: str | None = None, stream: bool | None = None
) -> Request:
    """``body`` is the parsed JSON (or its bytes); ``model`` and ``stream`` come from the URL."""
    root = Node(loads_strict(body) if isinstance(body, bytes) else body, "", InvalidRequest)
    _check_keys(root, _TOP_KEYS, _TOP_DROPPED)
    req = Request(model=_model(root, model), stream=bool(stream), stream_usage=bool(stream))
    req.system = _system(root)
    req.messages = _contents(root)
    req.tools = [_tool(f) for t in root.objs("tools") for f in _declarations(t)]
    config = root.obj("toolConfig")
    calling = config.obj("functionCallingConfig") if config else None
    if calling is not None:
        req.tool_choice, req.tools = _tool_choice(calling, req.tools)
    gen = root.obj("generationConfig")
    if gen is not None:
        _generation(gen, req)
    return req


def _check_keys(node: Node, known: frozenset[str], dropped: frozenset[str]) -> None:
    for key in sorted(node.keys() - known - dropped):
        if key == "cachedContent":
            raise node.fail(key, "names a Gemini-side cache, which cannot be translated")
        raise node.fail(key, "is not a supported field")


def _model(root: Node, model: str | None) -> str:
    name = model or root.text("model")
    if not name:
        raise InvalidRequest("the model is required (in the URL)", param="model")
    return name.removeprefix("models/")


def _system(root: Node) -> list[Text]:
    raw = root.raw("systemInstruction")
    if isinstance(raw, str):
        return [Text(raw)]
    node = root.obj("systemInstruction")
    out: list[Text] = []
    for part in node.objs("parts") if node else []:
        text = part.text("text")
        if text is None or kind_of(part) != "text":
            raise part.fail("", "must be a text part (systemInstruction)")
        out.append(Text(text))
    return out


def _contents(root: Node) -> list[Message]:
    contents = root.objs("contents")
    if not contents:
        raise root.fail("contents", "must be a non-empty array")
    ids = CallIds()
    messages: list[Message] = []
    for turn, content in enumerate(contents):
        role = content.text("role") or "user"
        if not content.array("parts"):
            raise content.fail("parts", "must be a non-empty array")
        if role == "model":
            message = _model_turn(content, ids, turn)
            if message.parts:  # e.g. only an empty text: nothing to say
                messages.append(message)
        elif role in ("user", "function"):  # "function": the v1 role of function responses
            messages.extend(_user_turn(content, ids))
        else:
            raise content.fail("role", "must be 'user' or 'model'")
    return messages


def _model_turn(content: Node, ids: CallIds, turn: int) -> Message:
    parts: list[Part] = []
    count = 0

    def new_id() -> str:
        return f"call_{turn}_{count}"

    for part in content.objs("parts"):
        kind = kind_of(part)
        if kind == "functionResponse":
            raise part.fail(kind, "is only valid in a user turn")
        if kind not in MODEL_KINDS:
            raise part.fail(kind, "cannot be translated to another provider")
        decoded = model_part(part, kind, new_id)
        if not decoded and kind in ("inlineData", "fileData"):
            raise part.fail(kind, "audio and video cannot be translated to another provider")
        for item in decoded:
            if isinstance(item, ToolCall):
                ids.called(item)
                count += 1
        parts.extend(decoded)
    return Message("assistant", parts)


def _user_turn(content: Node, ids: CallIds) -> list[Message]:
    """A user turn; its function responses become ``tool`` messages, in order."""
    messages: list[Message] = []
    for part in content.objs("parts"):
        kind = kind_of(part)
        if part.flag("thought"):
            raise part.fail("thought", "is only valid in a model turn")
        role: Role = "tool" if kind == "functionResponse" else "user"
        item = _user_part(part, kind, ids)
        if messages and messages[-1].role == role:
            messages[-1].parts.append(item)
        else:
            messages.append(Message(role, [item]))
    return messages


def _user_part(part: Node, kind: str, ids: CallIds) -> Part:
    if kind == "text":
        return Text(part.text("text") or "")
    if kind == "functionResponse":
        return tool_result(part, ids)
    if kind in ("inlineData", "fileData"):
        media = media_part(part, kind)
        if media is None:
            raise part.fail(kind, "audio and video cannot be translated to another provider")
        return media
    raise part.fail(kind, "is only valid in a model turn")


def _declarations(tool: Node) -> list[Node]:
    others = sorted(tool.keys() - {"functionDeclarations"})
    if others:
        raise tool.fail(others[0], "is a Gemini built-in tool, which cannot be translated")
    return tool.objs("functionDeclarations")


def _tool(decl: Node) -> Tool:
    name = decl.text("name")
    if not name:
        raise decl.fail("name", "is required")
    tool = Tool(name, decl.text("description"))
    schema, openapi = decl.raw("parametersJsonSchema"), decl.raw("parameters")
    if schema is not None and openapi is not None:
        raise decl.fail("parameters", "and parametersJsonSchema cannot both be given")
    if openapi is not None:
        schema = openapi_to_json_schema(openapi)
    if schema is not None:
        if not isinstance(schema, dict):
            raise decl.fail("parametersJsonSchema", "must be an object")
        tool.parameters = schema
    return tool


def openapi_to_json_schema(schema: object) -> object:
    """Gemini's OpenAPI-subset ``Schema`` (``type: "OBJECT"``, ``nullable``) → JSON Schema."""
    if isinstance(schema, list):
        return [openapi_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, object] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: openapi_to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "not", "additionalProperties"):
            out[key] = openapi_to_json_schema(value)
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if schema.get("nullable") is True:
        kind = out.get("type")
        out["type"] = [kind, "null"] if isinstance(kind, str) else kind
    return out


def _tool_choice(calling: Node, tools: list[Tool]) -> tuple[ToolChoice, list[Tool]]:
    """ANY with one allowed name forces that tool; with several, the tools are narrowed to
    them (the model may call only those either way)."""
    mode = calling.text("mode") or "AUTO"
    allowed = calling.texts("allowedFunctionNames")
    if mode != "ANY":
        if mode not in _MODES:
            raise calling.fail("mode", "must be AUTO, ANY, NONE or VALIDATED")
        return ToolChoice(_MODES[mode]), tools  # type: ignore[arg-type]
    if not allowed:
        return ToolChoice("required"), tools
    unknown = sorted(set(allowed) - {t.name for t in tools})
    if unknown:
        raise calling.fail("allowedFunctionNames", f"names no declared function: {unknown[0]}")
    if len(allowed) == 1:
        return ToolChoice("tool", allowed[0]), tools
    return ToolChoice("required"), [t for t in tools if t.name in allowed]


def _generation(gen: Node, req: Request) -> None:
    _check_keys(gen, _GEN_KEYS, _GEN_DROPPED)
    for field, key, kind in GEN_NUMBERS:
        read: Callable[[str], object] = gen.integer if kind is int else gen.number
        value = read(key)
        if value is not None:
            setattr(req, field, value)
    req.n = gen.integer("candidateCount") or 1
    req.stop = gen.texts("stopSequences")
    modalities = set(gen.texts("responseModalities")) - {"TEXT"}
    if modalities:
        raise gen.fail("responseModalities", "other than TEXT cannot be translated")
    req.response_format = _response_format(gen)
    thinking = gen.obj("thinkingConfig")
    if thinking is not None:
        req.reasoning = _reasoning(thinking)


def _response_format(gen: Node) -> ResponseFormat | None:
    mime = gen.text("responseMimeType")
    json_schema, openapi = gen.raw("responseJsonSchema"), gen.raw("responseSchema")
    if json_schema is not None and openapi is not None:
        raise gen.fail("responseSchema", "and responseJsonSchema cannot both be given")
    schema = openapi_to_json_schema(openapi) if openapi is not None else json_schema
    if schema is not None and not isinstance(schema, dict):
        raise gen.fail("responseJsonSchema", "must be an object")
    if schema is not None:
        if mime not in (None, "application/json"):
            raise gen.fail("responseMimeType", "must be application/json with a schema")
        return ResponseFormat("json_schema", schema)
    if mime == "application/json":
        return ResponseFormat("json_object")
    if mime not in (None, "text/plain"):
        raise gen.fail("responseMimeType", "must be text/plain or application/json")
    return None


def _reasoning(thinking: Node) -> ReasoningConfig:
    """thinkingBudget 0 turns thinking off, -1 is dynamic (on, no budget); includeThoughts
    defaults to false in Gemini."""
    _check_keys(
        thinking, frozenset({"includeThoughts", "thinkingBudget", "thinkingLevel"}), frozenset()
    )
    budget = thinking.integer("thinkingBudget")
    level = thinking.text("thinkingLevel")
    enabled = None if budget is None or budget > 0 else budget != 0
    return ReasoningConfig(
        enabled=enabled,
        effort=level.lower() if level else None,
        budget_tokens=budget if budget is not None and budget > 0 else None,
        include=bool(thinking.flag("includeThoughts")) and enabled is not False,
    )
