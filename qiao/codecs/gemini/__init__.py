"""The Gemini generateContent codec (Generative Language API and Vertex AI share the JSON).

Client role: ``decode_request``, ``encode_response``, ``StreamEncoder``, ``error_body``.
Provider role: ``encode_request``, ``decode_response``, ``StreamDecoder``, ``error_message``.
Embeddings (OpenAI ⇄ Gemini, no canonical form): ``embed_request_from_openai``,
``embed_request_to_openai``, ``embed_response_to_openai``, ``embed_response_from_openai``.

Input in both casings is accepted (proto3 JSON: ``inlineData``/``inline_data`` …); output is
camelCase. The model and the stream flag of a Gemini request come from its URL.

**Thought signatures.** ``ToolCall.signature`` is always a bare Gemini value. A canonical
``Reasoning.signature`` is ambiguous (Anthropic's or Gemini's), so this codec marks the ones it
reads from Gemini with the prefix ``gemini:``; a Gemini signature on a plain text part becomes
an empty ``Reasoning`` right before the ``Text``. Foreign reasoning (signature, redacted data)
handed to a Gemini client travels inside a base64 envelope in ``thoughtSignature`` and comes back
unchanged when the client echoes it.

Rules when a Gemini client's request is decoded:

* refused (``InvalidRequest``): ``cachedContent``; built-in tools (``googleSearch``,
  ``codeExecution`` …); audio and video parts; ``executableCode``/``codeExecutionResult`` parts;
  ``responseModalities`` other than TEXT; ``responseMimeType`` other than text/plain or
  application/json (``text/x.enum``); a ``functionResponse`` answering no earlier call; unknown
  fields at the top level, in ``generationConfig`` and in ``thinkingConfig``.
* dropped: ``safetySettings``, ``labels``, ``responseLogprobs``/``logprobs``,
  ``mediaResolution``, ``enableEnhancedCivicAnswers``, a declaration's ``response``/``behavior``,
  ``toolConfig.retrievalConfig``; a model turn that holds nothing (only an empty text).
* refused as Gemini does: a content with no parts, a part with no or several kinds.
* mapped: functionCall without ``id`` → ``call_<turn>_<n>``; a functionResponse without ``id``
  answers the oldest unanswered call of its name; ``{"result": text}`` / ``{"error": text}``
  responses unwrap to their text (the latter with ``is_error``), others become their JSON text;
  mode ANY with several ``allowedFunctionNames`` → ``required`` with the tools narrowed to them;
  VALIDATED → auto; ``parameters`` (OpenAPI subset) → JSON Schema; ``thinkingBudget`` 0 →
  ``enabled=False``, -1 → ``enabled=True``; ``includeThoughts`` absent → ``include=False``.

Rules when a canonical request is encoded for a Gemini upstream:

* refused: more than 5 stop sequences; a tool result whose function name is unknown; a forced
  ``tool_choice`` without tools; inline data whose media type is unknown; an unknown effort.
* dropped: reasoning without a ``gemini:`` signature (other providers' thinking, unsigned
  thought summaries, redacted thinking); ``Text.cache``; ``Image.detail``; ``Document.title``;
  ``Tool.strict``; ``ToolChoice.parallel``; ``ResponseFormat.name``/``strict``; ``user``;
  ``metadata``; ``stream``/``stream_usage`` (the URL says it; Gemini always streams usage);
  ``Message.name``.
* mapped: ``Request.web_search`` → a ``{"googleSearch": {}}`` tool (grounding; its
  ``groundingMetadata`` is not read back; :mod:`qiao.plan` keeps it from requests with
  functions, which Gemini refuses to mix with search); leading system messages join
  ``systemInstruction``; a later one becomes a user turn
  ``"System: …"`` in place (Gemini has no mid-conversation system role; its position matters
  more than its authority); tool results → ``functionResponse`` parts in a user turn (response =
  the JSON object the text holds, else ``{"result": text}``; ``is_error`` → ``{"error":
  text}``); several text parts of one result are joined by newlines; its images/documents follow
  as parts of that turn; call ids go as ``functionCall.id``/``functionResponse.id``; consecutive
  same-role turns merged; the first functionCall of a model turn without a signature gets
  ``skip_thought_signature_validator`` (the documented value; Gemini itself signs only the first
  of parallel calls); arguments that are not a JSON object → ``{"_raw": text}``; URL media →
  ``fileData`` (Gemini fetches only Files-API, gs:// and some https URIs: inline the bytes for
  others); ``n`` → candidateCount; json_object → responseMimeType only; json_schema → +
  responseJsonSchema; reasoning: ``enabled=False`` or effort "none" → thinkingBudget 0,
  ``budget_tokens`` → thinkingBudget, an effort → thinkingBudget (minimal 512, low 1024, medium
  8192, high 24576, xhigh/max -1) for gemini-1.x/2.x and thinkingLevel (minimal/low → LOW,
  others → HIGH) for later models, ``enabled=True`` alone → thinkingBudget -1.

A part holding only a ``thoughtSignature`` is an empty text part carrying it.

Answers: finishReason STOP with functionCall parts → ``tool_calls``; MAX_TOKENS → length;
SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_*, MODEL_ARMOR and a
``promptFeedback.blockReason`` → content_filter; MALFORMED_FUNCTION_CALL and the other tool
failures → error; the rest → stop (and back: tool_calls → STOP, content_filter → SAFETY, error →
OTHER). Usage: input = promptTokenCount + toolUsePromptTokenCount, output = candidates +
thoughts. Calls without ``id`` get ``call_<responseId>_<n>``. Parts the canonical model cannot
carry in an answer (audio, code execution, images in a stream) are dropped; streamed
function-call arguments (``partialArgs``) are never asked for, so not read. The embeddings
functions are named by direction in :mod:`qiao.codecs.embeddings` too.
"""

from __future__ import annotations

from ._embed import (
    embed_request_from_openai,
    embed_request_to_openai,
    embed_response_from_openai,
    embed_response_to_openai,
)
from ._request_in import decode_request
from ._request_out import encode_request
from ._response import decode_response, encode_response, error_body, error_message
from ._stream_in import StreamDecoder
from ._stream_out import StreamEncoder

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "embed_request_from_openai",
    "embed_request_to_openai",
    "embed_response_from_openai",
    "embed_response_to_openai",
    "encode_request",
    "encode_response",
    "error_body",
    "error_message",
]
