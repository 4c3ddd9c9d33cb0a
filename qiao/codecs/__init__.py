"""Codecs: one module (or package) per wire protocol, translating wire ⇄ canonical.

Each codec is pure (no sockets, no HTTP client, no clock except for ids/timestamps) and
offers the same functions, used in two roles:

As a **client** protocol (a surface received this wire format):

* ``decode_request(body, *, model=None, stream=None) -> Request`` — wire request → canonical.
  ``model``/``stream`` override the body (Gemini puts them in the URL). Raises
  :class:`qiao.errors.InvalidRequest` with a clear message and ``param`` for bad input.
* ``encode_response(resp: Response, request: Request | None = None) -> dict`` — canonical
  answer → wire JSON object. ``request`` is the client's own, decoded: a codec that renamed
  something when decoding it (the Responses API's namespaced tools) names it back.
* ``StreamEncoder(request: Request)`` with ``feed(event) -> bytes``, ``close() -> bytes``
  (the proper end: ``[DONE]``, ``message_stop`` ...) and ``fail(err: StreamError) -> bytes``
  (the protocol's mid-stream error event). It turns canonical events into SSE bytes.
* ``error_body(err: QiaoError) -> tuple[int, dict]`` — the status and JSON body of an error in
  this protocol's shape.

As a **provider** protocol (the upstream speaks this wire format):

* ``encode_request(req: Request, model: str) -> dict`` — canonical → upstream body. A field the
  target cannot honour is dropped or refused (``InvalidRequest``) by an explicit rule listed in
  the module docstring and in docs/translation.md — never silently mistranslated.
* ``decode_response(body: dict) -> Response`` — upstream answer → canonical.
* ``StreamDecoder()`` with ``feed(data: bytes) -> list[Event]`` (raw upstream bytes split
  anywhere; raises :class:`qiao.errors.UpstreamProtocolError` on a malformed event) and a
  ``done`` attribute that is True once the stream ended properly. Upstream error events become
  ``StreamError`` events.
* ``error_message(status: int, body: bytes) -> str | None`` — the message of an upstream error.
"""
