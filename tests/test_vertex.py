"""qiao.providers.vertex: service account, JWT assertion, token cache, URLs and Claude body."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from qiao.errors import UpstreamError, UpstreamTimeout
from qiao.providers.vertex import (
    CLOUD_PLATFORM_SCOPE,
    JWT_BEARER_GRANT,
    VERTEX_CLAUDE_VERSION,
    ServiceAccount,
    TokenSource,
    build_assertion,
    claude_count_tokens_url,
    claude_url,
    gemini_url,
    to_vertex_claude_body,
)

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM = RSA_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()
PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
TOKEN_URI = "https://oauth2.googleapis.com/token"
KEY_FILE = {
    "type": "service_account",
    "project_id": "qiao-test",
    "private_key_id": "0123abcd",
    "private_key": PEM,
    "client_email": "gateway@qiao-test.iam.gserviceaccount.com",
    "client_id": "1234",
    "token_uri": TOKEN_URI,
}
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def account(**changes: object) -> ServiceAccount:
    return ServiceAccount.from_json(json.dumps({**KEY_FILE, **changes}))


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- service account ------------------------------------------------------------------------


def test_service_account_from_json():
    sa = ServiceAccount.from_json(json.dumps(KEY_FILE).encode())

    assert (sa.client_email, sa.token_uri, sa.project_id, sa.private_key_id) == (
        KEY_FILE["client_email"],
        TOKEN_URI,
        "qiao-test",
        "0123abcd",
    )
    assert sa.private_key == PEM


def test_service_account_repr_hides_the_key():
    assert "PRIVATE" not in repr(account())


def test_service_account_without_a_key_id():
    assert account(private_key_id=None).private_key_id is None


def test_service_account_allows_a_loopback_http_token_uri():
    assert account(token_uri="http://127.0.0.1:9/token").token_uri == "http://127.0.0.1:9/token"


EC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({**KEY_FILE, "type": "authorized_user"}), "not a service account"),
        (json.dumps({**KEY_FILE, "client_email": ""}), "lacks client_email"),
        (
            json.dumps({k: v for k, v in KEY_FILE.items() if k != "private_key"}),
            "lacks private_key",
        ),
        (json.dumps({**KEY_FILE, "token_uri": 5}), "lacks token_uri"),
        (json.dumps({**KEY_FILE, "project_id": None}), "lacks project_id"),
        (json.dumps({**KEY_FILE, "client_email": "nobody"}), "not an email"),
        (json.dumps({**KEY_FILE, "token_uri": "http://evil.example/token"}), "https"),
        (json.dumps({**KEY_FILE, "private_key": "-----BEGIN garbage"}), "not an unencrypted PEM"),
        (json.dumps({**KEY_FILE, "private_key": EC_PEM}), "not an RSA key"),
    ],
)
def test_service_account_validation(text, why):
    with pytest.raises(ValueError, match=why) as info:
        ServiceAccount.from_json(text)

    assert "PRIVATE KEY" not in str(info.value)


# --- JWT assertion --------------------------------------------------------------------------


def test_assertion_header_and_claims():
    header, claims, _ = build_assertion(account(), T0).split(".")

    assert b64url_json(header) == {"alg": "RS256", "typ": "JWT", "kid": "0123abcd"}
    issued = int(T0.timestamp())
    assert b64url_json(claims) == {
        "iss": KEY_FILE["client_email"],
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": TOKEN_URI,
        "iat": issued,
        "exp": issued + 3600,
    }


def test_assertion_signature_verifies_with_the_public_key():
    signing_input, _, signature = build_assertion(account(), T0, "scope-x").rpartition(".")

    RSA_KEY.public_key().verify(
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
        signing_input.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )  # raises InvalidSignature otherwise


def test_assertion_verifies_with_google_auth():
    google_jwt = pytest.importorskip("google.auth.jwt")
    now = datetime.now(UTC)

    claims = google_jwt.decode(
        build_assertion(account(), now), certs=PUBLIC_PEM, audience=TOKEN_URI
    )

    assert claims["iss"] == KEY_FILE["client_email"]
    assert claims["scope"] == CLOUD_PLATFORM_SCOPE


def test_assertion_without_a_key_id_has_no_kid():
    header = build_assertion(account(private_key_id=None), T0).split(".")[0]

    assert b64url_json(header) == {"alg": "RS256", "typ": "JWT"}


def test_assertion_rejects_a_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        build_assertion(account(), datetime(2026, 1, 1))


# --- token source ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeTokenEndpoint:
    """Answers token exchanges with tok1, tok2, ...; ``gate`` holds answers until set."""

    def __init__(self, *replies: dict | Exception, expires_in: object = 3600) -> None:
        self.replies = list(replies)
        self.expires_in = expires_in
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str, form: dict[str, str]) -> dict:
        self.calls.append((url, form))
        if self.gate is not None:
            await self.gate.wait()
        if self.replies:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply
        return {"access_token": f"tok{len(self.calls)}", "expires_in": self.expires_in}


def source(clock: Clock, **kw: object) -> TokenSource:
    return TokenSource(account(), clock=clock, **kw)  # type: ignore[arg-type]


def test_token_exchange_form():
    clock, fetch = Clock(), FakeTokenEndpoint()

    assert asyncio.run(source(clock).token(fetch)) == "tok1"

    ((url, form),) = fetch.calls
    assert url == TOKEN_URI
    assert form["grant_type"] == JWT_BEARER_GRANT == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert b64url_json(form["assertion"].split(".")[1])["iat"] == int(T0.timestamp())


def test_token_is_cached_until_five_minutes_before_expiry():
    clock, fetch = Clock(), FakeTokenEndpoint()
    tokens = source(clock)

    async def run() -> list[str]:
        got = [await tokens.token(fetch)]
        clock.advance(minutes=54, seconds=59)
        got.append(await tokens.token(fetch))
        clock.advance(seconds=1)
        got.append(await tokens.token(fetch))
        return got

    assert asyncio.run(run()) == ["tok1", "tok1", "tok2"]
    assert len(fetch.calls) == 2


def test_a_short_lived_token_is_refreshed_at_half_life():
    clock, fetch = Clock(), FakeTokenEndpoint(expires_in=120)
    tokens = source(clock)

    async def run() -> list[str]:
        got = [await tokens.token(fetch)]
        clock.advance(seconds=59)
        got.append(await tokens.token(fetch))
        clock.advance(seconds=1)
        got.append(await tokens.token(fetch))
        return got

    assert asyncio.run(run()) == ["tok1", "tok1", "tok2"]


def test_a_custom_margin():
    clock, fetch = Clock(), FakeTokenEndpoint()
    tokens = source(clock, refresh_margin=timedelta(seconds=10))

    async def run() -> list[str]:
        got = [await tokens.token(fetch)]
        clock.advance(seconds=3589)
        got.append(await tokens.token(fetch))
        clock.advance(seconds=1)
        got.append(await tokens.token(fetch))
        return got

    assert asyncio.run(run()) == ["tok1", "tok1", "tok2"]


def test_concurrent_callers_share_one_refresh():
    clock, fetch = Clock(), FakeTokenEndpoint()
    tokens = source(clock)

    async def run() -> list[str]:
        fetch.gate = asyncio.Event()
        waiters = [asyncio.create_task(tokens.token(fetch)) for _ in range(20)]
        await asyncio.sleep(0)
        fetch.gate.set()
        return await asyncio.gather(*waiters)

    assert asyncio.run(run()) == ["tok1"] * 20
    assert len(fetch.calls) == 1


def test_concurrent_callers_share_one_failure_then_retry():
    clock = Clock()
    fetch = FakeTokenEndpoint(UpstreamTimeout("token endpoint timed out"))
    tokens = source(clock)

    async def run() -> tuple[list[object], str]:
        fetch.gate = asyncio.Event()
        waiters = [asyncio.create_task(tokens.token(fetch)) for _ in range(5)]
        await asyncio.sleep(0)
        fetch.gate.set()
        failures = await asyncio.gather(*waiters, return_exceptions=True)
        return failures, await tokens.token(fetch)

    failures, retried = asyncio.run(run())

    assert all(isinstance(f, UpstreamTimeout) for f in failures)
    assert len(fetch.calls) == 2
    assert retried == "tok2"


def test_a_cancelled_caller_does_not_cancel_the_shared_refresh():
    clock, fetch = Clock(), FakeTokenEndpoint()
    tokens = source(clock)

    async def run() -> str:
        fetch.gate = asyncio.Event()
        quitter = asyncio.create_task(tokens.token(fetch))
        stayer = asyncio.create_task(tokens.token(fetch))
        await asyncio.sleep(0)
        quitter.cancel()
        await asyncio.sleep(0)
        fetch.gate.set()
        return await stayer

    assert asyncio.run(run()) == "tok1"
    assert len(fetch.calls) == 1


def test_a_failed_refresh_keeps_serving_the_unexpired_token():
    clock = Clock()
    fetch = FakeTokenEndpoint(
        {"access_token": "tok1", "expires_in": 3600},
        UpstreamTimeout("token endpoint timed out"),
        UpstreamTimeout("token endpoint timed out"),
    )
    tokens = source(clock)

    async def run() -> list[str]:
        got = [await tokens.token(fetch)]
        clock.advance(minutes=56)  # in the refresh margin, still valid
        got.append(await tokens.token(fetch))
        clock.advance(minutes=4)  # expired
        with pytest.raises(UpstreamTimeout):
            await tokens.token(fetch)
        got.append(await tokens.token(fetch))
        return got

    assert asyncio.run(run()) == ["tok1", "tok1", "tok4"]


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (
            {"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
            "refused: invalid_grant: Invalid JWT Signature.",
        ),
        ({"error": "invalid_scope"}, "refused: invalid_scope$"),
        ({"token_type": "Bearer"}, "no access_token"),
        ({"access_token": ""}, "no access_token"),
        ({"access_token": "t", "expires_in": 0}, "bad expires_in"),
        ({"access_token": "t", "expires_in": True}, "bad expires_in"),
        ({"access_token": "t", "expires_in": "soon"}, "bad expires_in"),
    ],
)
def test_bad_token_replies_raise_upstream_errors(reply, why):
    with pytest.raises(UpstreamError, match=why) as info:
        asyncio.run(source(Clock()).token(FakeTokenEndpoint(reply)))

    assert info.value.code == "upstream_auth_error"
    assert info.value.retryable


@pytest.mark.parametrize(("expires_in", "cached_for"), [("3599", 3299), (None, 3300), (90.0, 45)])
def test_lenient_expires_in(expires_in, cached_for):
    reply = (
        {"access_token": "tok1"}
        if expires_in is None
        else {"access_token": "tok1", "expires_in": expires_in}
    )
    clock, fetch = Clock(), FakeTokenEndpoint(reply)
    tokens = source(clock)

    async def run() -> list[str]:
        got = [await tokens.token(fetch)]
        clock.advance(seconds=cached_for - 1)
        got.append(await tokens.token(fetch))
        clock.advance(seconds=1)
        got.append(await tokens.token(fetch))
        return got

    assert asyncio.run(run()) == ["tok1", "tok1", "tok2"]


# --- URLs and body ---------------------------------------------------------------------------

AIP = "https://us-central1-aiplatform.googleapis.com/v1/projects/p-1/locations/us-central1"


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (
            ("p-1", "us-central1", "gemini-2.5-pro", "generateContent", False),
            f"{AIP}/publishers/google/models/gemini-2.5-pro:generateContent",
        ),
        (
            ("p-1", "us-central1", "gemini-2.5-pro", "streamGenerateContent", True),
            f"{AIP}/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        ),
        (
            ("p-1", "global", "gemini-2.5-flash", "countTokens", False),
            "https://aiplatform.googleapis.com/v1/projects/p-1/locations/global"
            "/publishers/google/models/gemini-2.5-flash:countTokens",
        ),
        (
            ("p 1", "europe-west4", "a/b?c", "embedContent", False),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p%201/locations/europe-west4"
            "/publishers/google/models/a%2Fb%3Fc:embedContent",
        ),
    ],
)
def test_gemini_url(args, url):
    project, region, model, method, stream = args

    assert gemini_url(project, region, model, method, stream=stream) == url


def test_gemini_url_with_a_base_url():
    url = gemini_url(
        "p", "us-east5", "g", "generateContent", stream=True, base_url="http://127.0.0.1:9/"
    )

    assert url == (
        "http://127.0.0.1:9/v1/projects/p/locations/us-east5/publishers/google/models/g"
        ":generateContent?alt=sse"
    )


@pytest.mark.parametrize(("stream", "method"), [(False, "rawPredict"), (True, "streamRawPredict")])
def test_claude_url(stream, method):
    url = claude_url("p-1", "us-central1", "claude-sonnet-4-5@20250929", stream=stream)

    assert url == f"{AIP}/publishers/anthropic/models/claude-sonnet-4-5@20250929:{method}"


def test_claude_url_global():
    assert claude_url("p", "global", "claude-opus-4-1", stream=False) == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global"
        "/publishers/anthropic/models/claude-opus-4-1:rawPredict"
    )


def test_claude_count_tokens_url():
    assert claude_count_tokens_url("p-1", "us-central1") == (
        f"{AIP}/publishers/anthropic/models/count-tokens:rawPredict"
    )


@pytest.mark.parametrize("region", ["", "US", "evil.com/x", "a b", "-x"])
def test_urls_reject_a_bad_region(region):
    with pytest.raises(ValueError, match="region"):
        claude_url("p", region, "m", stream=False)


@pytest.mark.parametrize("method", ["", "generate:Content", "x/y", "a?b"])
def test_gemini_url_rejects_a_bad_method(method):
    with pytest.raises(ValueError, match="method"):
        gemini_url("p", "global", "m", method, stream=False)


@pytest.mark.parametrize(("project", "model"), [("", "m"), ("p", "")])
def test_urls_reject_an_empty_project_or_model(project, model):
    with pytest.raises(ValueError, match="must not be empty"):
        gemini_url(project, "global", model, "generateContent", stream=False)


def test_to_vertex_claude_body():
    body = {"model": "claude", "stream": True, "max_tokens": 5, "messages": []}

    out = to_vertex_claude_body(body)

    assert out == {
        "stream": True,
        "max_tokens": 5,
        "messages": [],
        "anthropic_version": VERTEX_CLAUDE_VERSION,
    }
    assert VERTEX_CLAUDE_VERSION == "vertex-2023-10-16"
    assert body["model"] == "claude"


def test_to_vertex_claude_body_keeps_a_given_version():
    assert to_vertex_claude_body({"anthropic_version": "x"}) == {"anthropic_version": "x"}
