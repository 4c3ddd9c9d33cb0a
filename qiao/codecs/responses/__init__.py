"""The OpenAI Responses API codec (protocols.md §2.8, §0 item 14, §7 Codex), client role.

A caller speaks ``POST /v1/responses`` (Codex CLI with ``wire_api="responses"``, the openai
SDK's ``client.responses``) and the model is served by any provider protocol:
:func:`decode_request`, :func:`encode_response`, :class:`StreamEncoder`, :func:`error_body`.
The gateway is stateless: every turn must carry the full history (Codex sends ``store:false``).

Translation rules (a field is kept, mapped, dropped or refused — never guessed):

decode_request (client → canonical)
  * ``input`` as a string → one user message. As items: ``message`` items (``type`` optional)
    with role user/assistant/system/developer and string or part content: ``input_text``,
    ``output_text`` and ``refusal`` → Text; ``input_image`` with a base64 data URL →
    ``Image(media_type, data)``, http(s) → ``Image(url)``, ``detail`` kept; ``input_file``
    with ``file_data`` (data URL, or bare base64 taken as PDF) → ``Document`` (``filename`` →
    title), ``file_url`` → ``Document(url)``; ``file_id`` refused (OpenAI storage); other part
    types refused.
  * ``instructions`` and the leading system/developer messages → ``Request.system``; later
    ones → ``Message(role="system")`` in place.
  * ``function_call`` (call_id, name, arguments) → ToolCall; ``function_call_output`` →
    ``Message(role="tool", [ToolResult])`` (string or parts). ``reasoning`` items → Reasoning
    (summary texts joined with a blank line, else ``content`` reasoning_text;
    ``encrypted_content`` → ``signature``). Assistant-side items in a row (reasoning,
    assistant messages, function calls) form one assistant message.
  * ``web_search_call`` items dropped (a search OpenAI ran; its findings are in the assistant
    text after it); ``item_reference`` and other item types (computer_call,
    custom_tool_call, ...) refused. A ``function_call`` with a ``namespace`` goes by its flat
    name (below).
  * Tools (:mod:`._tools`): function tools (name, description, parameters, strict);
    ``namespace`` tools (Codex) flattened to functions named ``<namespace>__<name>`` (within
    every provider's name rules, collisions hashed), the mapping in
    ``Request.tool_namespaces``; ``web_search`` → ``Request.web_search`` (domains, location);
    any other tool type (file_search, computer, mcp, custom, ...) refused naming it.
    ``tool_choice`` none/auto/required/{type: function, name, namespace?}; others refused.
    ``parallel_tool_calls`` → ``ToolChoice.parallel``.
  * ``max_output_tokens`` → max_tokens; temperature, top_p; ``text.format`` (json_schema flat:
    name, schema, strict / json_object / text) → ResponseFormat; ``reasoning.effort`` →
    ``ReasoningConfig(enabled=True, effort)``, "none" → ``enabled=False``;
    ``safety_identifier`` (wins) or ``user``; metadata; stream. Usage is always streamed.
  * Refused (400 ``unsupported_parameter``) unless inert (null/false/0/empty): :data:`REFUSED`
    — ``previous_response_id`` and ``conversation`` ("stateless: send the full history, as
    Codex does with store:false"), ``background`` (true), ``prompt``, ``top_logprobs``,
    ``max_tool_calls``, ``moderation``.
  * Dropped: :data:`DROPPED` — store, include, truncation, service_tier,
    prompt_cache_key/options/retention, stream_options, text.verbosity, reasoning.summary,
    context_management, client_metadata — and unknown keys. (Reasoning signatures are always
    returned as ``encrypted_content``, whether or not ``include`` asked for them.)

encode_response / StreamEncoder (canonical → client)
  * Choice 0 only. Output items in the order of the parts: each Reasoning → a ``reasoning``
    item (``rs_…``; its text as one ``summary_text``; signature → ``encrypted_content``;
    Anthropic redacted reasoning → ``encrypted_content`` ``"qiao-redacted:<data>"``, read
    back as ``Reasoning.redacted``); Text parts in a row → one ``message`` item (``msg_…``)
    with one ``output_text`` part (annotations [], logprobs []); each ToolCall → a
    ``function_call`` item (``fc_…``, status completed). A ToolCall signature (Gemini) has no
    field on a function_call item, so it travels in a reasoning item just before the call
    with ``encrypted_content`` ``"qiao-call-signature:<sig>"``, and is put back on the next
    function_call when the client returns the history. A call of a namespaced function is
    named as declared (``namespace`` + ``name``); ``encode_response`` needs the client's
    request for that. Images/documents in answers dropped.
  * Finish "length" → status ``incomplete`` with ``incomplete_details.reason``
    ``max_output_tokens``; "content_filter" → incomplete / ``content_filter``; "error" →
    ``failed`` with ``error.code`` server_error; otherwise ``completed``.
  * Usage → input_tokens (+ details cached_tokens = cache reads, cache_write_tokens),
    output_tokens (+ reasoning_tokens), total_tokens. The echoed settings (tools [], store
    false, truncation "disabled", ...) are fixed values, or taken from the request in a
    stream (temperature, top_p, max_output_tokens, tool_choice, parallel_tool_calls,
    reasoning.effort, text.format, string metadata).
  * Streams: see :class:`StreamEncoder`; a mid-stream error → ``event: error`` with
    ``{type, code, message, param: null, sequence_number}`` and nothing after it.
"""

from ._request_in import DROPPED, REFUSED, decode_request
from ._response import encode_response, error_body
from ._stream_out import StreamEncoder

__all__ = ["DROPPED", "REFUSED", "StreamEncoder", "decode_request", "encode_response", "error_body"]
