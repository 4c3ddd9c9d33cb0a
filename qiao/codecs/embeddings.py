"""Embeddings between the two protocols that have them, OpenAI and Gemini, named by direction.

The translation lives in :mod:`qiao.codecs.gemini` (its module docstring lists what is refused
and dropped); this module only names the four directions the engine needs.
"""

from __future__ import annotations

from .gemini import (
    embed_request_from_openai,
    embed_request_to_openai,
    embed_response_from_openai,
    embed_response_to_openai,
)
from .gemini._embed import SDK_LABEL, encoding_format, sdk_folds, unfold_sdk_batch

__all__ = [
    "SDK_LABEL",
    "gemini_to_openai_request",
    "gemini_to_openai_response",
    "openai_to_gemini_request",
    "openai_to_gemini_response",
    "sdk_folds",
    "unfold_sdk_batch",
]


def openai_to_gemini_request(body: object, model: str) -> dict[str, object]:
    """An OpenAI client's embeddings body → a ``:batchEmbedContents`` body for ``model``."""
    return embed_request_from_openai(body, model=model)


def gemini_to_openai_response(
    obj: object, request: dict[str, object], model: str
) -> dict[str, object]:
    """A Gemini answer → the OpenAI answer the client's ``request`` asked for."""
    return embed_response_to_openai(obj, model=model, encoding_format=encoding_format(request))


def gemini_to_openai_request(body: object, model: str) -> dict[str, object]:
    """A Gemini client's ``:batchEmbedContents`` / ``:embedContent`` body → an OpenAI body."""
    return embed_request_to_openai(body, model=model)


def openai_to_gemini_response(obj: object, method: str | None) -> dict[str, object]:
    """An OpenAI answer → the shape of the Gemini ``method`` the client called."""
    return embed_response_from_openai(obj, batch=method != "embedContent")
