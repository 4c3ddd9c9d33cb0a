"""The OpenAI Chat Completions codec (protocols.md §2.2–2.4, §2.10, §5, §6), both roles.

Client role — a caller speaks chat.completions and the model is served by another protocol:
:func:`decode_request`, :func:`encode_response`, :class:`StreamEncoder`, :func:`error_body`.
Provider role — the upstream speaks chat.completions (OpenAI or a compatible server):
:func:`encode_request` (tuned per upstream by :class:`EncodeOptions`), :func:`decode_response`,
:class:`StreamDecoder`, :func:`error_message`.

Translation rules (a field is kept, mapped, dropped or refused — never guessed):

decode_request (client → canonical)
  * Leading ``system``/``developer`` messages → ``Request.system`` (one Text per string or
    text part); later ones → ``Message(role="system")`` in place. A message ``name`` is kept
    on user/assistant messages, dropped on system ones.
  * User parts: text (``prompt_cache_breakpoint`` → ``Text.cache``); ``image_url`` with a
    base64 data URL → ``Image(media_type, data)``, http(s) → ``Image(url)``, ``detail`` kept,
    other schemes refused; ``file`` with ``file_data`` → ``Document`` (``filename`` → title),
    ``file_id`` refused (OpenAI storage); ``input_audio`` refused ("audio input cannot be
    translated").
  * Assistant: ``reasoning_content`` or ``reasoning`` → a ``Reasoning`` part first; content
    string/text parts and ``refusal`` → Text; ``tool_calls`` → ToolCall with the arguments
    text kept as sent (an object is serialised), ``extra_content.google.thought_signature`` →
    ``ToolCall.signature``; ``audio`` (a previous audio answer) refused.
  * ``tool`` → ``Message(role="tool", [ToolResult])`` (string or parts); the deprecated
    ``function_call``/``role: "function"``/``functions`` map to their tool equivalents with
    made-up ids ``call_fnN`` that pair each call with the next result of that name.
  * Tools: function tools only (``custom`` and other types refused); ``tool_choice`` none/
    auto/required/{function}; ``allowed_tools`` refused; ``parallel_tool_calls`` →
    ``ToolChoice.parallel`` (an "auto" choice is made to carry it).
  * ``max_completion_tokens`` (wins) or ``max_tokens``; temperature, top_p, stop (string or
    list), n, seed, presence/frequency_penalty, ``top_k`` (vendor extension), response_format
    (json_schema ``description`` dropped), ``safety_identifier`` (wins) or ``user``, metadata,
    stream, ``stream_options.include_usage`` → ``stream_usage``.
  * Reasoning: ``reasoning_effort`` → ``ReasoningConfig(effort, enabled=True)``, "none" →
    ``enabled=False``; the vendor switches ``enable_thinking``, ``thinking_budget`` and
    ``thinking: {type, budget_tokens}`` are read too.
  * Refused (400 ``unsupported_parameter``) when set to anything but an inert value:
    :data:`REFUSED` — logprobs, top_logprobs, logit_bias, audio, modalities (other than
    ["text"]), prediction, web_search_options, moderation.
  * Dropped: :data:`DROPPED` — store, service_tier, prompt_cache_key/options/retention,
    verbosity, stream_options.include_obfuscation — and unknown vendor extensions (min_p,
    repetition_penalty, chat_template_kwargs, ...): OpenAI-compatible clients send such knobs
    by default, and refusing them would break them.

encode_response / StreamEncoder (canonical → client)
  * ``content`` is the Text parts joined ("" between them), null when there are only tool
    calls; Reasoning text → ``reasoning_content`` (message and delta); reasoning signatures and
    redacted reasoning, images and documents in answers, ``stop_sequence`` and message names are
    dropped (chat.completions has no place for them).
  * A ToolCall signature → ``extra_content.google.thought_signature`` on that call, so the
    client sends it back (as with Gemini's OpenAI-compatible API).
  * Finish reason "error" is written as ``"error"`` (as OpenRouter does); a missing one as
    "stop". Ids get a ``chatcmpl-`` prefix.

encode_request (canonical → upstream)
  * System texts joined with a blank line into one leading system message; in-place system
    messages stay in place. User text-only content → one string (texts joined with a blank
    line); otherwise parts: Image → data URL or url (+detail; inline data needs a media type);
    Document inline → ``file`` part (filename = title, else "document.pdf"), text Document →
    text part, Document by URL only → refused (chat.completions takes files inline only).
  * Assistant: text joined, ``content`` null with tool calls; tool calls with their arguments
    text (and ``extra_content`` for signatures); Reasoning text → ``reasoning_content`` unless
    ``EncodeOptions.reasoning_passback`` is off; images/documents dropped.
  * Tool results → one ``tool`` message each (text joined; ``is_error`` → "Error: " prefix);
    images and files in a tool result go into a user message after the tool messages (tool
    messages take only text), and the tool message says so.
  * ``max_tokens`` → ``max_tokens`` (or ``max_completion_tokens`` per options); ``top_k`` sent
    as an extra (or dropped per options); tool_choice/parallel_tool_calls only with tools;
    response_format (json_schema name defaults to "response"); reasoning → ``reasoning_effort``:
    the effort, else enabled with a budget → low (<4096) / medium (<16384) / high, enabled
    without one → medium; disabled → omitted. ``metadata`` dropped (OpenAI takes it only with
    ``store``; others ignore it). Streaming always asks ``stream_options.include_usage``.

decode_response / StreamDecoder (upstream → canonical), provider quirks (§6) normalised:
  reasoning in ``reasoning_content``, ``reasoning``, ``reasoning_details`` or a leading
  ``<think>…</think>`` in content (also streamed, tags split across chunks); GLM object
  arguments → JSON text; missing ``object``/``created``/tool-call ids tolerated; "stop" with
  tool calls → "tool_calls"; DeepSeek ``prompt_cache_hit_tokens`` and Kimi top-level
  ``cached_tokens`` → cache reads; Azure's ``choices: []`` filter chunks ignored; an
  ``{"error": ...}`` chunk or OpenRouter's ``finish_reason: "error"`` → StreamError.
"""

from ._request_in import DROPPED, REFUSED, decode_request
from ._request_out import EncodeOptions, encode_request
from ._response import decode_response, encode_response, error_body, error_message
from ._stream_in import MAX_EVENT_BYTES, StreamDecoder
from ._stream_out import StreamEncoder

__all__ = [
    "DROPPED",
    "MAX_EVENT_BYTES",
    "REFUSED",
    "EncodeOptions",
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "error_body",
    "error_message",
]
