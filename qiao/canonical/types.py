"""The canonical types. Plain slotted dataclasses: cheap to build, easy to compare in tests.

Semantics that differ between protocols are fixed here once:

* ``Usage.input_tokens`` counts *all* prompt tokens, cache reads and writes included
  (OpenAI's ``prompt_tokens``); Anthropic's ``input_tokens`` excludes them, so its codec adds
  them. ``Usage.output_tokens`` counts all generated tokens, reasoning included (Gemini's
  ``candidatesTokenCount`` excludes thoughts, so its codec adds ``thoughtsTokenCount``).
* ``ToolCall.arguments`` is the JSON *text* of the arguments (OpenAI's form); codecs for
  protocols that carry an object (Anthropic ``input``, Gemini ``args``) convert.
* ``FinishReason`` is OpenAI's vocabulary; the stop sequence that fired, when known, rides in
  ``Choice.stop_sequence`` / ``Finish.stop_sequence``.
* A ``Message`` with ``role="system"`` may stand anywhere in ``Request.messages`` (Anthropic
  allows a mid-conversation system message); ``Request.system`` holds the leading system prompt.
* Tool results are parts of a ``role="tool"`` message (OpenAI) — codecs for protocols that put
  them in a user turn (Anthropic, Gemini) convert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Choice",
    "Document",
    "Event",
    "Finish",
    "FinishReason",
    "Image",
    "Message",
    "Part",
    "Reasoning",
    "ReasoningConfig",
    "ReasoningDelta",
    "Request",
    "Response",
    "ResponseFormat",
    "Role",
    "StreamError",
    "StreamStart",
    "Text",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallStart",
    "ToolChoice",
    "ToolResult",
    "Usage",
    "UsageEvent",
    "WebSearch",
]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


# ----------------------------------------------------------------------------- content parts


@dataclass(slots=True)
class Text:
    text: str
    cache: bool = False  # a prompt-cache breakpoint was set on this part (Anthropic cache_control)


@dataclass(slots=True)
class Image:
    """Either inline ``data`` (base64, with ``media_type``) or a ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    detail: str | None = None  # OpenAI "low" | "high" | "auto"


@dataclass(slots=True)
class Document:
    """A file such as a PDF: inline base64 ``data``, a ``url``, or plain ``text``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    text: str | None = None
    title: str | None = None


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text
    signature: str | None = None  # Gemini thought signature of this call


@dataclass(slots=True)
class ToolResult:
    call_id: str
    content: list[Text | Image | Document] = field(default_factory=list)
    is_error: bool = False
    name: str | None = None  # the called function's name, when the protocol says it


@dataclass(slots=True)
class Reasoning:
    """Reasoning / thinking content. ``redacted`` carries Anthropic's opaque redacted data."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


Part = Text | Image | Document | ToolCall | ToolResult | Reasoning


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part] = field(default_factory=list)
    name: str | None = None


# ----------------------------------------------------------------------------- request


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # for mode "tool"
    parallel: bool | None = (
        None  # False: at most one tool call (Anthropic disable_parallel_tool_use)
    )


@dataclass(slots=True)
class WebSearch:
    """The provider's own web search, which it runs itself (OpenAI ``web_search``, Anthropic
    ``web_search_*``, Gemini ``googleSearch``): declared like a tool, never called by the client;
    its findings reach the client as the answer's text."""

    allowed_domains: list[str] | None = None
    user_location: dict[str, str] | None = None  # approximate: city, region, country, timezone


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class ReasoningConfig:
    """``enabled`` None means "not said". ``effort`` is low|medium|high|...; ``budget_tokens``
    is a thinking budget; ``include`` asks for the reasoning text in the answer."""

    enabled: bool | None = None
    effort: str | None = None
    budget_tokens: int | None = None
    include: bool = True


@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message] = field(default_factory=list)
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int = 1
    stream: bool = False
    stream_usage: bool = False  # the client asked for usage in the stream (OpenAI)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    reasoning: ReasoningConfig | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    web_search: WebSearch | None = None
    # Tools a client declared inside a group (the Responses API's ``namespace`` tools): flat
    # tool name every provider sees -> (namespace, name); the client's codec maps calls back.
    tool_namespaces: dict[str, tuple[str, str]] | None = None


# ----------------------------------------------------------------------------- response


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Choice:
    index: int
    message: Message
    finish_reason: FinishReason | None = "stop"
    stop_sequence: str | None = None


@dataclass(slots=True)
class Response:
    id: str
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    created: int = 0


# ----------------------------------------------------------------------------- stream events
# A decoder turns upstream bytes into these; an encoder turns them into client bytes.
# ``index`` is the choice index; ``call_index`` numbers tool calls within a choice (0, 1, ...).


@dataclass(slots=True)
class StreamStart:
    id: str
    model: str
    created: int = 0
    usage: Usage | None = None  # Anthropic reports input tokens at the start


@dataclass(slots=True)
class TextDelta:
    text: str
    index: int = 0


@dataclass(slots=True)
class ReasoningDelta:
    text: str = ""
    signature: str | None = None  # may arrive alone, after the text
    redacted: str | None = None
    index: int = 0


@dataclass(slots=True)
class ToolCallStart:
    id: str
    name: str
    call_index: int = 0
    index: int = 0
    signature: str | None = None


@dataclass(slots=True)
class ToolCallDelta:
    arguments: str  # a fragment of the JSON text
    call_index: int = 0
    index: int = 0


@dataclass(slots=True)
class Finish:
    reason: FinishReason
    index: int = 0
    stop_sequence: str | None = None


@dataclass(slots=True)
class UsageEvent:
    usage: Usage  # cumulative: the latest replaces earlier ones


@dataclass(slots=True)
class StreamError:
    message: str
    status: int = 500
    type: str = "server_error"  # the OpenAI-style error type
    code: str | None = None


Event = (
    StreamStart
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | Finish
    | UsageEvent
    | StreamError
)
