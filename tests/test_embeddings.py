"""Batch embeddings keep one vector per input, in order, whichever way they go.

google-genai's ``embed_content(contents=[a, b])`` sends ``:batchEmbedContents`` with one request
per input; Gemini answers one embedding per request. Each direction is driven by the official
SDK against fakes on 127.0.0.1 whose vectors are a function of the text, so a merged, dropped or
reordered input shows as a wrong vector, not just a wrong count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import CLIENT_KEY
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import EMBED_DIM, FakeOpenAI, embedding_vector
from gateway import Gateway
from google import genai
from google.genai import types

TEXTS = ["alpha bravo", "charlie", "delta echo foxtrot"]


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    with FakeGemini(api_key="AIza-up-gemini-0123") as fg, FakeOpenAI(api_key="sk-up-oa-0123") as fo:
        yield {"gemini": fg, "openai": fo}


@pytest.fixture(scope="module")
def gw(fakes: dict[str, Any]) -> Iterator[Gateway]:
    config = f"""
providers:
  g: {{type: gemini, base_url: "{fakes["gemini"].url}", api_key: AIza-up-gemini-0123}}
  o: {{type: openai, base_url: "{fakes["openai"].base_url}", api_key: sk-up-oa-0123}}
models:
  gemini-embedding-001: [{{provider: g}}]
  emb-gemini: [{{provider: g, model: gemini-embedding-001}}]
  emb-openai: [{{provider: o, model: text-embedding-3-small}}]
  gemini-via-openai: [{{provider: o, model: text-embedding-3-small}}]
  gemini-embedding-2: [{{provider: g}}]
keys: [{{name: t, key: {CLIENT_KEY}}}]
"""
    with Gateway(config) as g:
        yield g


def genai_client(gw: Gateway) -> genai.Client:
    options = types.HttpOptions(base_url=gw.url, api_version="v1beta", timeout=30_000)
    return genai.Client(api_key=CLIENT_KEY, http_options=options)


def expected(dim: int = EMBED_DIM) -> list[list[float]]:
    return [pytest.approx(embedding_vector(t, dim)) for t in TEXTS]  # type: ignore[misc]


# google-genai folds [a, b] into one multi-part content for names it takes for a multimodal
# embedder (any "gemini" but gemini-embedding-001/-exp): "emb-gemini" is one, though it serves
# gemini-embedding-001, so the gateway unfolds the batch the SDK meant.
@pytest.mark.parametrize("model", ["gemini-embedding-001", "emb-gemini", "models/emb-gemini"])
def test_gemini_to_gemini_batch(gw: Gateway, fakes: dict[str, Any], model: str) -> None:
    client = genai_client(gw)  # held: a collected client closes its connection pool
    got = client.models.embed_content(model=model, contents=TEXTS)
    assert [e.values for e in got.embeddings or []] == expected()
    sent = fakes["gemini"].last_request
    assert sent.path.endswith("/models/gemini-embedding-001:batchEmbedContents")
    assert len(sent.json["requests"]) == len(TEXTS)
    assert {r["model"] for r in sent.json["requests"]} == {"models/gemini-embedding-001"}


def test_gemini_to_gemini_batch_with_dimensions(gw: Gateway) -> None:
    config = types.EmbedContentConfig(output_dimensionality=8, task_type="RETRIEVAL_DOCUMENT")
    client = genai_client(gw)
    got = client.models.embed_content(model="emb-gemini", contents=TEXTS, config=config)
    assert [e.values for e in got.embeddings or []] == expected(8)


@pytest.mark.parametrize("model", ["emb-openai", "gemini-via-openai"])
def test_gemini_to_openai_batch(gw: Gateway, fakes: dict[str, Any], model: str) -> None:
    client = genai_client(gw)
    got = client.models.embed_content(model=model, contents=TEXTS)
    assert [e.values for e in got.embeddings or []] == expected()
    assert fakes["openai"].last_request.json["input"] == TEXTS


@pytest.mark.parametrize("encoding", ["float", openai.omit], ids=["float", "sdk-base64"])
def test_openai_to_gemini_batch(gw: Gateway, fakes: dict[str, Any], encoding: Any) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)
    got = client.embeddings.create(model="emb-gemini", input=TEXTS, encoding_format=encoding)
    assert [d.index for d in got.data] == [0, 1, 2]
    assert [d.embedding for d in got.data] == expected()
    sent = fakes["gemini"].last_request.json
    assert [r["content"]["parts"] for r in sent["requests"]] == [[{"text": t}] for t in TEXTS]


def test_a_multimodal_embedder_keeps_the_fold(gw: Gateway, fakes: dict[str, Any]) -> None:
    """Called by a multimodal embedder's own name, [a, b] is one content, as Gemini means it."""
    client = genai_client(gw)
    got = client.models.embed_content(model="gemini-embedding-2", contents=TEXTS)
    assert len(got.embeddings or []) == 1
    assert len(fakes["gemini"].last_request.json["requests"]) == 1


def test_one_multi_part_content_is_one_vector(gw: Gateway, fakes: dict[str, Any]) -> None:
    client = genai_client(gw)
    one = types.Content(parts=[types.Part(text=t) for t in TEXTS])
    got = client.models.embed_content(model="gemini-embedding-001", contents=one)
    assert len(got.embeddings or []) == 1
