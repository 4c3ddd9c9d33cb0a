"""The Anthropic Messages wire shapes this codec *writes* (protocols.md §3), as TypedDicts.

What it reads is untrusted JSON and goes through :mod:`._check` instead.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Json = dict[str, Any]


class CacheControl(TypedDict):
    type: Literal["ephemeral"]


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str
    cache_control: NotRequired[CacheControl]


class Base64Source(TypedDict):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(TypedDict):
    type: Literal["url"]
    url: str


class PlainTextSource(TypedDict):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ImageBlock(TypedDict):
    type: Literal["image"]
    source: Base64Source | UrlSource


class DocumentBlock(TypedDict):
    type: Literal["document"]
    source: Base64Source | UrlSource | PlainTextSource
    title: NotRequired[str]


class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: Json


ResultContent = TextBlock | ImageBlock | DocumentBlock


class ToolResultBlock(TypedDict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: NotRequired[list[ResultContent]]
    is_error: NotRequired[bool]


class ThinkingBlock(TypedDict):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(TypedDict):
    type: Literal["redacted_thinking"]
    data: str


Block = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
)


class MessageParam(TypedDict):
    role: Literal["user", "assistant", "system"]
    content: list[Block]


class ToolParam(TypedDict):
    name: str
    input_schema: Json
    description: NotRequired[str]
    strict: NotRequired[bool]


class WebSearchToolParam(TypedDict):
    """Anthropic's own web search, a server tool (it runs the searches itself)."""

    type: Literal["web_search_20250305"]
    name: Literal["web_search"]
    allowed_domains: NotRequired[list[str]]
    user_location: NotRequired[dict[str, str]]


class ToolChoiceParam(TypedDict):
    type: Literal["auto", "any", "none", "tool"]
    name: NotRequired[str]
    disable_parallel_tool_use: NotRequired[bool]


class ThinkingParam(TypedDict):
    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: NotRequired[int]
    display: NotRequired[Literal["omitted"]]


class OutputFormat(TypedDict):
    type: Literal["json_schema"]
    schema: Json


class OutputConfig(TypedDict):
    format: OutputFormat


class Metadata(TypedDict):
    user_id: str


class MessagesRequest(TypedDict):
    model: str
    max_tokens: int
    messages: list[MessageParam]
    system: NotRequired[list[TextBlock]]
    tools: NotRequired[list[ToolParam | WebSearchToolParam]]
    tool_choice: NotRequired[ToolChoiceParam]
    thinking: NotRequired[ThinkingParam]
    output_config: NotRequired[OutputConfig]
    stop_sequences: NotRequired[list[str]]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    top_k: NotRequired[int]
    metadata: NotRequired[Metadata]
    stream: NotRequired[bool]


class OutputTokensDetails(TypedDict):
    thinking_tokens: int


class UsageBody(TypedDict):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens_details: NotRequired[OutputTokensDetails]


class MessageBody(TypedDict):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Block]
    stop_reason: str | None
    stop_sequence: str | None
    usage: UsageBody


class ErrorObject(TypedDict):
    type: str
    message: str


class ErrorBody(TypedDict):
    type: Literal["error"]
    error: ErrorObject


# ----------------------------------------------------------------------------- stream events


class MessageStartEvent(TypedDict):
    type: Literal["message_start"]
    message: MessageBody


class ContentBlockStartEvent(TypedDict):
    type: Literal["content_block_start"]
    index: int
    content_block: TextBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock


class TextDelta(TypedDict):
    type: Literal["text_delta"]
    text: str


class ThinkingDelta(TypedDict):
    type: Literal["thinking_delta"]
    thinking: str


class SignatureDelta(TypedDict):
    type: Literal["signature_delta"]
    signature: str


class InputJsonDelta(TypedDict):
    type: Literal["input_json_delta"]
    partial_json: str


class ContentBlockDeltaEvent(TypedDict):
    type: Literal["content_block_delta"]
    index: int
    delta: TextDelta | ThinkingDelta | SignatureDelta | InputJsonDelta


class ContentBlockStopEvent(TypedDict):
    type: Literal["content_block_stop"]
    index: int


class StopDelta(TypedDict):
    stop_reason: str
    stop_sequence: str | None


class MessageDeltaEvent(TypedDict):
    type: Literal["message_delta"]
    delta: StopDelta
    usage: UsageBody


class MessageStopEvent(TypedDict):
    type: Literal["message_stop"]
