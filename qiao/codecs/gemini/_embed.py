"""Embeddings, OpenAI ⇄ Gemini, as pure functions on wire bodies (the canonical model has no
embeddings: only these two protocols have them, so this one pair is translated directly).

* OpenAI ``{input, model, dimensions, encoding_format, user}`` ⇄ Gemini ``:batchEmbedContents``
  ``{requests: [{model: "models/…", content: {parts: [{text}]}, outputDimensionality, taskType}]}``
  or ``:embedContent`` ``{content, outputDimensionality, taskType, title}``.
* Gemini ``{embeddings: [{values}]}`` / ``{embedding: {values}}`` ⇄ OpenAI ``{object: "list",
  data: [{object: "embedding", index, embedding}], model, usage}``; ``encoding_format: "base64"``
  means base64 of little-endian float32.

Refused: token-id inputs (Gemini embeds text only), non-text Gemini parts, and a Gemini batch
whose requests ask for different dimensions. A batch google-genai folded into one request only
because an alias looked like a multimodal embedder is unfolded (:func:`unfold_sdk_batch`).
Dropped: OpenAI ``user``; Gemini ``taskType`` and ``title`` (OpenAI has neither); several text
parts of one Gemini content are joined by newlines.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Final, TypedDict

from ...errors import InvalidRequest, UpstreamProtocolError
from ._common import Node

_FORMATS: Final = ("float", "base64")


class _GTextPart(TypedDict):
    text: str


class _GEmbedContent(TypedDict):
    parts: list[_GTextPart]


class _GEmbedRequest(TypedDict, total=False):
    model: str
    content: _GEmbedContent
    outputDimensionality: int
    taskType: str


class _OEmbedding(TypedDict):
    object: str
    index: int
    embedding: list[float] | str


class _OUsage(TypedDict):
    prompt_tokens: int
    total_tokens: int


# ----------------------------------------------------------------------------- requests


def embed_request_from_openai(
    body: object, *, model: str, task_type: str | None = None
) -> dict[str, object]:
    """An OpenAI embeddings body → a Gemini ``:batchEmbedContents`` body for ``model``."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    texts = _texts(body.get("input"))
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise InvalidRequest("'dimensions' must be a positive integer", param="dimensions")
    encoding_format(body)
    name = model if model.startswith("models/") else f"models/{model}"
    requests = []
    for text in texts:
        req = _GEmbedRequest(model=name, content=_GEmbedContent(parts=[_GTextPart(text=text)]))
        if dimensions is not None:
            req["outputDimensionality"] = dimensions
        if task_type is not None:
            req["taskType"] = task_type
        requests.append(req)
    return {"requests": requests}


def encoding_format(body: dict[str, object]) -> str:
    """The OpenAI body's encoding_format, checked (the answer's shape depends on it)."""
    fmt = body.get("encoding_format") or "float"
    if fmt not in _FORMATS:
        raise InvalidRequest("'encoding_format' must be float or base64", param="encoding_format")
    return str(fmt)


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty array", param="input")
    if all(isinstance(v, str) for v in value):
        return [str(v) for v in value]
    if all(isinstance(v, int | list) for v in value):
        raise InvalidRequest(
            "token-id inputs cannot be sent to Gemini, which embeds text only; send strings "
            "(LangChain: check_embedding_ctx_length=False)",
            param="input",
        )
    raise InvalidRequest("'input' must be a string or an array of strings", param="input")


def embed_request_to_openai(body: object, *, model: str) -> dict[str, object]:
    """A Gemini client's ``:batchEmbedContents`` or ``:embedContent`` body → an OpenAI body."""
    root = Node(body, "", InvalidRequest)
    requests = root.objs("requests") if root.raw("requests") is not None else [root]
    if not requests:
        raise root.fail("requests", "must be a non-empty array")
    texts = [_content_text(r) for r in requests]
    dims = {r.integer("outputDimensionality") for r in requests}
    if len(dims) > 1:
        raise root.fail("requests", "must all ask for the same outputDimensionality")
    out: dict[str, object] = {"model": model, "input": texts, "encoding_format": "float"}
    dim = dims.pop()
    if dim is not None:
        out["dimensions"] = dim
    return out


def _content_text(req: Node) -> str:
    content = req.obj("content")
    if content is None:
        raise req.fail("content", "is required")
    texts = []
    for part in content.objs("parts"):
        text = part.text("text")
        if text is None or len(part.keys()) != 1:
            raise part.fail("", "must be a text part (Qiao embeds text only)")
        texts.append(text)
    return "\n".join(texts)


# ----------------------------------------------------------------------------- SDK folding

SDK_LABEL: Final = "google-genai-sdk/"  # in the x-goog-api-client header of google-genai
_TEXT_EMBEDDERS: Final = ("gemini-embedding-001", "gemini-embedding-exp")


def sdk_folds(model: str) -> bool:
    """Whether google-genai takes ``model`` for a multimodal embedder (gemini-embedding-2 on)
    and so folds ``embed_content(contents=[a, b])`` into ONE content with a part per input,
    which Gemini embeds as one vector. Its rule (3.6.1), on the name the client uses: any id
    containing "gemini" but gemini-embedding-001 / -exp."""
    model_id = model.rsplit("/", 1)[-1]
    return "gemini" in model_id and not model_id.startswith(_TEXT_EMBEDDERS)


def unfold_sdk_batch(
    body: dict[str, object], alias: str, upstream: str, client: str
) -> dict[str, object] | None:
    """The batch google-genai meant, or None when there is nothing to undo.

    An alias such as ``emb-gemini`` in front of gemini-embedding-001 makes the SDK fold a
    list of inputs into one request (see :func:`sdk_folds`); called by the upstream's name it
    would have sent one request per input. So when the SDK (``client`` is the
    x-goog-api-client header) folded for the alias but would not for ``upstream``, a lone
    request of several text parts becomes one request per part: one vector per input again.
    """
    if SDK_LABEL not in client or not sdk_folds(alias) or sdk_folds(upstream):
        return None
    requests = body.get("requests")
    if not isinstance(requests, list) or len(requests) != 1 or not isinstance(requests[0], dict):
        return None
    request, content = requests[0], requests[0].get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(content, dict) or not isinstance(parts, list) or len(parts) < 2:
        return None
    if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        return None
    unfolded = [{**request, "content": {**content, "parts": [p]}} for p in parts]
    return {**body, "requests": unfolded}


# ----------------------------------------------------------------------------- responses


def embed_response_to_openai(
    body: object, *, model: str, encoding_format: str = "float"
) -> dict[str, object]:
    """A Gemini embeddings answer → an OpenAI embeddings answer."""
    root = Node(body, "", UpstreamProtocolError)
    single = root.obj("embedding")
    items = [single] if single is not None else root.objs("embeddings")
    data = [
        _OEmbedding(object="embedding", index=i, embedding=_vector_out(_values(e), encoding_format))
        for i, e in enumerate(items)
    ]
    meta = root.obj("usageMetadata")
    tokens = (meta.integer("promptTokenCount") or 0) if meta is not None else 0
    usage = _OUsage(prompt_tokens=tokens, total_tokens=tokens)
    return {"object": "list", "data": data, "model": model, "usage": usage}


def _values(item: Node) -> list[float]:
    values = item.array("values")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise item.fail("values", "must be an array of numbers")
    return [float(v) for v in values]  # type: ignore[arg-type]


def _vector_out(values: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


def embed_response_from_openai(body: object, *, batch: bool = True) -> dict[str, object]:
    """An OpenAI embeddings answer → ``{"embeddings": [...]}`` (or ``{"embedding": ...}`` for
    ``:embedContent``), in ``index`` order; base64 vectors are decoded."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise UpstreamProtocolError("the embeddings answer has no 'data' array")
    items = sorted(body["data"], key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
    vectors = [{"values": _vector_in(d)} for d in items]
    if batch:
        return {"embeddings": vectors}
    if len(vectors) != 1:
        raise UpstreamProtocolError("expected exactly one embedding")
    return {"embedding": vectors[0]}


def _vector_in(item: object) -> list[float]:
    vec = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(vec, str):
        try:
            raw = base64.b64decode(vec, validate=True)
        except binascii.Error:
            raise UpstreamProtocolError("an embedding is not valid base64") from None
        if len(raw) % 4:
            raise UpstreamProtocolError("a base64 embedding is not float32")
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(vec, list) and all(isinstance(v, int | float) for v in vec):
        return [float(v) for v in vec]
    raise UpstreamProtocolError("an embedding must be an array of numbers or base64")
