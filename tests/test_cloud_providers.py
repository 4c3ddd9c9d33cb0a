"""Claude on AWS Bedrock (SigV4, event-stream) and Gemini/Claude on Vertex AI (service-account
OAuth), end to end through the gateway with the official SDKs as clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from conftest import CLIENT_KEY
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fakes.cloud import Loopback, fake_bedrock, fake_vertex
from gateway import Gateway
from google import genai
from google.genai import types

AKID = "AKIDQIAOTEST0000"
SECRET = "qiao/test/secret+key0000000000000000000"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def bedrock() -> Iterator[Loopback]:
    with fake_bedrock(AKID, SECRET, "us-east-1") as server:
        yield server


@pytest.fixture(scope="module")
def vertex(rsa_key: rsa.RSAPrivateKey) -> Iterator[Loopback]:
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with fake_vertex(public) as server:
        yield server


@pytest.fixture(scope="module")
def gw(
    bedrock: Loopback,
    vertex: Loopback,
    rsa_key: rsa.RSAPrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    sa = {
        "type": "service_account",
        "project_id": "proj-1",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "qiao@proj-1.iam.gserviceaccount.com",
        "token_uri": f"{vertex.url}/token",
    }
    sa_file: Path = tmp_path_factory.mktemp("sa") / "sa.json"
    sa_file.write_text(json.dumps(sa))
    config = f"""
providers:
  aws:
    type: bedrock
    region: us-east-1
    base_url: "{bedrock.url}"
    aws_access_key_id: {AKID}
    aws_secret_access_key: "{SECRET}"
  gcp:
    type: vertex
    project: proj-1
    region: us-central1
    base_url: "{vertex.url}"
    credentials_file: "{sa_file}"
models:
  claude-bedrock: [{{provider: aws, model: "anthropic.claude-sonnet-4-6-v1:0"}}]
  gemini-vertex: [{{provider: gcp, model: gemini-2.5-flash}}]
  claude-vertex: [{{provider: gcp, model: "claude-sonnet-4-6@20260101"}}]
keys: [{{name: t, key: {CLIENT_KEY}}}]
"""
    with Gateway(config) as g:
        yield g


def oa(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0)


def an(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0)


MSGS = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_from_openai_client(gw: Gateway, bedrock: Loopback, stream: bool) -> None:
    if stream:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in oa(gw).chat.completions.create(
                model="claude-bedrock", messages=MSGS, stream=True
            )
            if c.choices
        )
    else:
        text = (
            oa(gw)
            .chat.completions.create(model="claude-bedrock", messages=MSGS)
            .choices[0]
            .message.content
        )
    assert text == "hello from the cloud"
    sent = bedrock.seen[-1]
    suffix = "invoke-with-response-stream" if stream else "invoke"
    assert sent["path"] == f"/model/anthropic.claude-sonnet-4-6-v1:0/{suffix}"
    assert sent["body"]["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in sent["body"] and "stream" not in sent["body"]


@pytest.mark.parametrize("stream", [False, True])
def test_bedrock_from_anthropic_client(gw: Gateway, bedrock: Loopback, stream: bool) -> None:
    kw = {"model": "claude-bedrock", "max_tokens": 50, "messages": MSGS}
    if stream:
        with an(gw).messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = an(gw).messages.create(**kw)
    assert msg.content[0].text == "hello from the cloud"
    assert gw.log.last()["usage"]["output_tokens"] == 4


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_gemini_from_openai_client(gw: Gateway, vertex: Loopback, stream: bool) -> None:
    if stream:
        text = "".join(
            c.choices[0].delta.content or ""
            for c in oa(gw).chat.completions.create(
                model="gemini-vertex", messages=MSGS, stream=True
            )
            if c.choices
        )
    else:
        text = (
            oa(gw)
            .chat.completions.create(model="gemini-vertex", messages=MSGS)
            .choices[0]
            .message.content
        )
    assert text == "hello from vertex"
    method = "streamGenerateContent" if stream else "generateContent"
    assert vertex.seen[-1]["path"] == (
        f"/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.5-flash:{method}"
    )


def test_vertex_gemini_from_genai_client_and_token_reuse(gw: Gateway, vertex: Loopback) -> None:
    client = genai.Client(
        api_key=CLIENT_KEY, http_options=types.HttpOptions(base_url=gw.url, api_version="v1beta")
    )
    assert (
        client.models.generate_content(model="gemini-vertex", contents="hi").text
        == "hello from vertex"
    )
    assert (
        client.models.generate_content(model="gemini-vertex", contents="hi").text
        == "hello from vertex"
    )
    token_requests = [s for s in vertex.seen if "token_request" in s]
    assert len(token_requests) == 1  # one token, cached
    claims = token_requests[0]["token_request"]
    assert claims["iss"] == "qiao@proj-1.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_claude_from_anthropic_client(gw: Gateway, vertex: Loopback, stream: bool) -> None:
    kw = {"model": "claude-vertex", "max_tokens": 50, "messages": MSGS}
    if stream:
        with an(gw).messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = an(gw).messages.create(**kw)
    assert msg.content[0].text == "hello from the cloud"
    sent = vertex.seen[-1]
    op = "streamRawPredict" if stream else "rawPredict"
    assert sent["path"].endswith(f"/publishers/anthropic/models/claude-sonnet-4-6@20260101:{op}")
    assert sent["body"]["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent["body"]


def test_bad_bedrock_signature_is_a_502(bedrock: Loopback) -> None:
    config = f"""
providers:
  aws: {{type: bedrock, region: us-east-1, base_url: "{bedrock.url}", aws_access_key_id: {AKID},
         aws_secret_access_key: wrong-secret-000000000000}}
models: {{c: [{{provider: aws, model: anthropic.claude-x}}]}}
keys: [{{name: t, key: {CLIENT_KEY}}}]
"""
    with Gateway(config) as g, pytest.raises(openai.InternalServerError) as exc:
        oa(g).chat.completions.create(model="c", messages=MSGS)
    assert exc.value.status_code == 502
    assert "wrong-secret" not in str(exc.value.body)
