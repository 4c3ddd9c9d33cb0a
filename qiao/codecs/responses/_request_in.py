"""A client's ``POST /v1/responses`` body → canonical :class:`Request` (client role)."""

from __future__ import annotations

from typing import Any

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
    ToolCall,
    ToolResult,
)
from ...errors import InvalidRequest
from ..openai_chat._check import (
    get_bool,
    get_dict,
    get_int,
    get_list,
    get_number,
    get_str,
    require_str,
)
from ..openai_chat._common import json_text, parse_data_url
from ._common import CALL_SIGNATURE, REDACTED
from ._tools import ToolNames, decode_tools, tool_choice

__all__ = ["DROPPED", "REFUSED", "decode_request"]

# Parameters that need server-side state or a feature no other protocol has: refused unless
# inert. The message says why.
REFUSED: dict[str, str] = {
    "previous_response_id": "this gateway is stateless: send the full history, as Codex does "
    "with store:false",
    "conversation": "this gateway is stateless: send the full history, as Codex does with "
    "store:false",
    "background": "background responses need server-side state",
    "prompt": "stored prompt templates live on OpenAI's servers",
    "top_logprobs": "log probabilities cannot be translated",
    "max_tool_calls": "a limit on built-in tool calls cannot be translated",
    "moderation": "OpenAI moderation settings cannot be translated",
}
# OpenAI-only knobs with no effect on the answer's content, dropped when translating (as are
# unknown keys).
DROPPED = frozenset(
    {
        "store",
        "include",
        "truncation",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "stream_options",
        "text.verbosity",
        "reasoning.summary",
        "context_management",
        "client_metadata",
    }
)
_INERT: tuple[object, ...] = (None, False, 0, {}, [], "")
_SYSTEM_ROLES = ("system", "developer")


def decode_request(
    body: dict[str, Any], *, model: str | None = None, stream: bool | None = None
) -> Request:
    """A Responses API request body as canonical. Raises :class:`InvalidRequest`."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for key, why in REFUSED.items():
        if body.get(key) not in _INERT:
            raise InvalidRequest(
                f"'{key}' cannot be honoured: {why}.",
                param=key,
                code="unsupported_parameter",
            )
    system: list[Text] = []
    instructions = get_str(body, "instructions", "instructions")
    if instructions:
        system.append(Text(instructions))
    tools, web_search, names = decode_tools(body)
    messages = _Items(system, names).decode(body.get("input"))
    wants_stream = get_bool(body, "stream", "stream") if stream is None else stream
    text = get_dict(body, "text", "text") or {}
    request = Request(
        model=model or require_str(body, "model", "model"),
        messages=messages,
        system=system,
        tools=tools,
        tool_choice=tool_choice(body, names),
        max_tokens=get_int(body, "max_output_tokens", "max_output_tokens", minimum=1),
        temperature=get_number(body, "temperature", "temperature"),
        top_p=get_number(body, "top_p", "top_p"),
        stream=bool(wants_stream),
        stream_usage=True,
        response_format=_response_format(get_dict(text, "format", "text.format")),
        reasoning=_reasoning(get_dict(body, "reasoning", "reasoning")),
        user=get_str(body, "safety_identifier", "safety_identifier")
        or get_str(body, "user", "user"),
        metadata=get_dict(body, "metadata", "metadata"),
        web_search=web_search,
        tool_namespaces=names.origins or None,
    )
    return request


# ----------------------------------------------------------------------------- input items


class _Items:
    """Turns the ``input`` item list into messages. Assistant-side items in a row (reasoning,
    assistant messages, function calls) form one assistant message; leading system/developer
    messages go to ``Request.system``."""

    def __init__(self, system: list[Text], names: ToolNames) -> None:
        self.system = system
        self.names = names
        self.messages: list[Message] = []
        self.call_signature: str | None = None

    def decode(self, value: object) -> list[Message]:
        if isinstance(value, str):
            return [Message("user", [Text(value)])]
        if not isinstance(value, list):
            raise InvalidRequest(
                "'input' is required: a string or an array of input items.", param="input"
            )
        for i, item in enumerate(value):
            param = f"input[{i}]"
            if not isinstance(item, dict):
                raise InvalidRequest(f"'{param}' must be an object.", param=param)
            self._item(item, param)
        return self.messages

    def _item(self, item: dict[str, Any], param: str) -> None:
        kind = item.get("type")
        if kind is None or kind == "message":
            self._message(item, param)
        elif kind == "function_call":
            arguments = item.get("arguments")
            name = require_str(item, "name", f"{param}.name")
            namespace = get_str(item, "namespace", f"{param}.namespace")
            call = ToolCall(
                id=require_str(item, "call_id", f"{param}.call_id"),
                name=self.names.flat(namespace, name) if namespace else name,
                arguments=arguments
                if isinstance(arguments, str)
                else "{}"
                if arguments is None
                else json_text(arguments),
                signature=self.call_signature,
            )
            self.call_signature = None
            self._assistant([call])
        elif kind == "function_call_output":
            result = ToolResult(
                call_id=require_str(item, "call_id", f"{param}.call_id"),
                content=_output(item.get("output"), f"{param}.output"),
            )
            self.messages.append(Message("tool", [result]))
        elif kind == "reasoning":
            self._reasoning(item, param)
        elif kind == "web_search_call":
            pass  # a search OpenAI ran: what it found is in the assistant text that follows
        elif kind == "item_reference":
            raise InvalidRequest(
                f"'{param}' is an item_reference, which needs server-side state: this gateway "
                "is stateless, so send the full items (as Codex does with store:false).",
                param=param,
                code="unsupported_parameter",
            )
        else:
            raise InvalidRequest(
                f"'{param}.type' {kind!r} cannot be translated: only messages, function_call, "
                "function_call_output, reasoning and web_search_call items can.",
                param=f"{param}.type",
                code="unsupported_parameter",
            )

    def _assistant(self, parts: list[Part]) -> None:
        if not parts:
            return
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "assistant":
            last.parts.extend(parts)
        else:
            self.messages.append(Message("assistant", parts))

    def _message(self, item: dict[str, Any], param: str) -> None:
        role = item.get("role")
        if role not in ("user", "assistant", *_SYSTEM_ROLES):
            raise InvalidRequest(
                f"'{param}.role' must be 'user', 'assistant', 'system' or 'developer'.",
                param=f"{param}.role",
            )
        parts = _content(item.get("content"), f"{param}.content", assistant=role == "assistant")
        if role in _SYSTEM_ROLES:
            texts = [p for p in parts if isinstance(p, Text)]
            if len(texts) != len(parts):
                raise InvalidRequest(
                    f"'{param}.content' of a {role} message may hold text only.",
                    param=f"{param}.content",
                )
            if not self.messages:
                self.system.extend(texts)
            else:
                self.messages.append(Message("system", list(texts)))
        elif role == "assistant":
            self._assistant(parts)
        else:
            self.messages.append(Message("user", parts))

    def _reasoning(self, item: dict[str, Any], param: str) -> None:
        encrypted = get_str(item, "encrypted_content", f"{param}.encrypted_content")
        if encrypted is not None and encrypted.startswith(CALL_SIGNATURE):
            self.call_signature = encrypted[len(CALL_SIGNATURE) :]  # for the next call
            return
        texts = []
        for key in ("summary", "content"):
            for j, part in enumerate(get_list(item, key, f"{param}.{key}") or []):
                if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                    raise InvalidRequest(
                        f"'{param}.{key}[{j}]' must be an object with a 'text'.",
                        param=f"{param}.{key}[{j}]",
                    )
                texts.append(part["text"])
            if texts:  # summary wins; raw reasoning_text content is the fallback
                break
        reasoning = Reasoning(text="\n\n".join(texts))
        if encrypted is not None and encrypted.startswith(REDACTED):
            reasoning.redacted = encrypted[len(REDACTED) :]
        elif encrypted:
            reasoning.signature = encrypted
        if reasoning.text or reasoning.signature or reasoning.redacted:
            self._assistant([reasoning])


def _content(value: object, param: str, *, assistant: bool) -> list[Part]:
    if isinstance(value, str):
        return [Text(value)] if value or not assistant else []
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of parts.", param=param)
    parts: list[Part] = []
    for j, part in enumerate(value):
        parts.append(_part(part, f"{param}[{j}]"))
    return parts


def _part(part: object, param: str) -> Text | Image | Document:
    if not isinstance(part, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return Text(require_text(part, "text", param))
    if kind == "refusal":
        return Text(require_text(part, "refusal", param))
    if kind == "input_image":
        return _image(part, param)
    if kind == "input_file":
        return _file(part, param)
    raise InvalidRequest(
        f"'{param}.type' {kind!r} cannot be translated: only input_text, input_image, "
        "input_file, output_text and refusal parts can.",
        param=f"{param}.type",
        code="unsupported_parameter",
    )


def require_text(part: dict[str, Any], key: str, param: str) -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{param}.{key}' must be a string.", param=f"{param}.{key}")
    return value


def _no_file_id(part: dict[str, Any], param: str) -> None:
    if part.get("file_id") is not None:
        raise InvalidRequest(
            f"'{param}.file_id' refers to OpenAI file storage, which this gateway cannot "
            "reach: send the content inline.",
            param=f"{param}.file_id",
            code="unsupported_parameter",
        )


def _image(part: dict[str, Any], param: str) -> Image:
    _no_file_id(part, param)
    url = require_str(part, "image_url", f"{param}.image_url")
    detail = get_str(part, "detail", f"{param}.detail")
    if url.startswith("data:"):
        parsed = parse_data_url(url)
        if parsed is None:
            raise InvalidRequest(
                f"'{param}.image_url' is not a valid base64 data URL.", param=f"{param}.image_url"
            )
        return Image(media_type=parsed[0], data=parsed[1], detail=detail)
    if not url.startswith(("https://", "http://")):
        raise InvalidRequest(
            f"'{param}.image_url' must be an http(s) or data: URL.", param=f"{param}.image_url"
        )
    return Image(url=url, detail=detail)


def _file(part: dict[str, Any], param: str) -> Document:
    _no_file_id(part, param)
    name = get_str(part, "filename", f"{param}.filename")
    data = get_str(part, "file_data", f"{param}.file_data")
    if data is not None:
        parsed = parse_data_url(data) if data.startswith("data:") else None
        if data.startswith("data:") and parsed is None:
            raise InvalidRequest(
                f"'{param}.file_data' is not a valid base64 data URL.", param=f"{param}.file_data"
            )
        media_type, payload = parsed or ("application/pdf", data)
        return Document(media_type=media_type, data=payload, title=name)
    url = get_str(part, "file_url", f"{param}.file_url")
    if url is not None and url.startswith(("https://", "http://")):
        return Document(url=url, title=name)
    raise InvalidRequest(
        f"'{param}' needs 'file_data' (base64) or an http(s) 'file_url'.", param=param
    )


def _output(value: object, param: str) -> list[Text | Image | Document]:
    if isinstance(value, str):
        return [Text(value)]
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of parts.", param=param)
    return [_part(p, f"{param}[{j}]") for j, p in enumerate(value)]


# ----------------------------------------------------------------------------- formats


def _response_format(value: dict[str, Any] | None) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind != "json_schema":
        raise InvalidRequest(
            "'text.format.type' must be 'text', 'json_object' or 'json_schema'.",
            param="text.format.type",
        )
    return ResponseFormat(
        "json_schema",
        schema=get_dict(value, "schema", "text.format.schema"),
        name=get_str(value, "name", "text.format.name"),
        strict=get_bool(value, "strict", "text.format.strict"),
    )


def _reasoning(value: dict[str, Any] | None) -> ReasoningConfig | None:
    effort = get_str(value or {}, "effort", "reasoning.effort")
    if effort is None:
        return None
    if effort == "none":
        return ReasoningConfig(enabled=False)
    return ReasoningConfig(enabled=True, effort=effort)
