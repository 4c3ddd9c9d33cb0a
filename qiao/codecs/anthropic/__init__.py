"""The Anthropic Messages codec (``POST /v1/messages``, protocols.md §3, §5), both roles.

Modules: ``request_decode`` (client request -> canonical), ``request_encode`` (canonical ->
upstream body), ``response`` (answers both ways), ``stream_encode`` / ``stream_decode`` (SSE both
ways), ``errors`` (error bodies), ``blocks`` (content blocks ⇄ parts), ``_maps`` (stop reasons,
usage, error types), ``_wire`` (the wire shapes written), ``_check`` (field checks).

Translation rules (the contract: nothing is silently mistranslated)
--------------------------------------------------------------------

Decoding an Anthropic client's request (its upstream is *not* Anthropic; Anthropic to Anthropic
is byte passthrough):

* Dropped, no canonical meaning: the top-level fields ``context_management``, ``cache_control``,
  ``container``, ``service_tier``, ``speed``, ``inference_geo``, ``diagnostics``,
  ``user_profile_id``, ``workspace_id``, ``compaction``, ``fallbacks``, ``thread``, ``betas``
  (``request_decode.DROPPED_FIELDS``) and any unknown top-level field; ``cache_control`` on blocks
  other than text (tool_use, tool_result, image, document, tools); ``citations``; document
  ``context``; tool ``input_examples`` / ``eager_input_streaming`` / ``defer_loading`` /
  ``allowed_callers``; ``thinking.display`` other than ``omitted``; Claude Code's
  ``x-anthropic-billing-header: …`` system text block.
* Refused (``InvalidRequest``, with ``param``): server tools (a tool with a ``type`` other than
  ``custom``, e.g. ``web_search_20250305``, ``bash_*``) and server-tool blocks
  (``server_tool_use``, ``*_tool_result``) — they work only with an Anthropic upstream;
  non-empty ``mcp_servers``; image/document sources of type ``file`` or ``content``; block
  types not allowed in their place (e.g. ``tool_use`` in a user turn); a missing ``max_tokens``,
  ``model`` or ``messages``; any field of the wrong type.
* Mapped: ``cache_control`` on text -> ``Text.cache``; a user turn's ``tool_result`` blocks ->
  one ``role="tool"`` message each, in order, followed by a user message with the rest of the
  turn; ``ToolResult.name`` is filled from the earlier ``tool_use`` with that id;
  ``thinking`` enabled/adaptive/disabled -> ``ReasoningConfig(enabled=True+budget / True /
  False)``, ``display: "omitted"`` -> ``include=False``; ``output_config.effort`` -> ``effort``;
  ``output_config.format`` -> ``ResponseFormat(json_schema)``; ``disable_parallel_tool_use`` ->
  ``parallel = not it``; ``metadata.user_id`` -> ``user`` (kept verbatim, even Claude Code's
  JSON string); ``stream_usage`` = ``stream`` (Anthropic streams always carry usage).

Encoding a canonical request for an Anthropic upstream:

* Refused: ``n > 1``; ``response_format`` ``json_object`` (Anthropic only has json_schema);
  an unknown reasoning effort; inline media without a media type; a system message with
  non-text parts.
* Dropped: ``seed``, ``presence_penalty``, ``frequency_penalty``, ``metadata``, ``stream_usage``,
  ``Message.name``, ``Image.detail``, ``ResponseFormat.name/strict``, ``ToolCall.signature``,
  ``ToolResult.name`` (``request_encode.DROPPED``); empty text parts (Anthropic rejects empty
  text blocks); an assistant turn left empty; ``tool_choice`` when there are no tools;
  **reasoning without a signature** (Anthropic rejects unsigned ``thinking`` blocks; redacted
  reasoning is sent as ``redacted_thinking``).
* ``Request.web_search`` (a client's built-in search, e.g. Codex's) -> the server tool
  ``{"type": "web_search_20250305", "name": "web_search"}`` with ``allowed_domains`` and an
  approximate ``user_location``; left out when a client function is itself named
  ``web_search`` (Anthropic refuses two tools of one name). Whether a target gets it at all is
  :mod:`qiao.plan`'s call. Its ``server_tool_use`` / ``web_search_tool_result`` answer blocks
  and text ``citations`` are skipped when decoding: the client gets the answer's text.
* ``max_tokens`` None -> 4096 (``DEFAULT_MAX_TOKENS``); ``temperature`` clamped to 1.0;
  ``temperature`` / ``top_p`` / ``top_k`` otherwise forwarded (the provider adapter strips them
  for anthropic-version 2026-10-21).
* Reasoning: ``enabled=False`` or effort ``"none"`` -> ``{"type":"disabled"}``; a budget (given,
  or from the effort: minimal/low 1024, medium 4096, high 16384, xhigh 32768, max 65536) ->
  ``{"type":"enabled","budget_tokens":b}`` with ``b`` raised to 1024 and kept below
  ``max_tokens`` (a caller without ``max_tokens`` gets ``b + 4096``; when the caller's
  ``max_tokens`` leaves no room for 1024, thinking is dropped); ``enabled=True`` with neither
  -> ``{"type":"adaptive"}``. ``output_config.effort`` is never sent (older models reject it).
  ``include=False`` -> ``display: "omitted"``. With thinking on, ``temperature`` and ``top_k``
  are dropped and ``top_p`` below 0.95 too; with a forced ``tool_choice`` (required/tool),
  thinking is dropped (Anthropic refuses the pair; the forced tool wins).
* Leading system messages join the top-level ``system``; later ones are sent as
  ``{"role":"system"}`` messages (needs the ``mid-conversation-system-2026-04-07`` beta header,
  the provider adapter's business). A run of tool messages and the user message right after it
  form one user turn, ``tool_result`` blocks first.

Tool arguments: canonical JSON text -> ``input`` object; empty text -> ``{}``; text that is
not a JSON object -> ``{"_raw": "<text>"}`` (requests and answers alike; decoding never
unwraps it). ``input`` -> compact JSON text (UTF-8 kept).

Answers: only choice 0; finish ``stop`` -> ``end_turn`` (``stop_sequence`` when the choice names
one), ``length`` -> ``max_tokens``, ``tool_calls`` -> ``tool_use``, ``content_filter`` ->
``refusal``, ``error``/None -> ``end_turn``; back: ``pause_turn`` -> stop,
``model_context_window_exceeded`` -> length, unknown -> stop. Image/document/tool-result parts
cannot be in an Anthropic answer and are dropped; unsigned reasoning is sent with
``signature: ""`` (the SDK requires the field). Usage: Anthropic ``input_tokens`` excludes cache
reads/writes, so canonical ``input_tokens = input + cache_read + cache_creation``;
``output_tokens_details.thinking_tokens`` <-> ``reasoning_tokens``. Ids get a ``msg_`` prefix.
Unknown answer block types (server tools) are skipped when decoding.

Errors: 400 invalid_request_error, 401 authentication_error, 402 billing_error, 403
permission_error, 404 not_found_error, 408 timeout_error, 413 request_too_large, 429
rate_limit_error, 500/502 api_error, 503 -> **529** overloaded_error, 504 timeout_error. A
mid-stream ``error`` event from upstream -> ``StreamError`` (overloaded 503, rate limit 429,
timeout 504, else 502) with ``code`` = the Anthropic error type.
"""

from __future__ import annotations

from .errors import error_body, error_message
from .request_decode import decode_request
from .request_encode import encode_request
from .response import decode_response, encode_response
from .stream_decode import StreamDecoder
from .stream_encode import StreamEncoder

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_body",
    "error_message",
]
