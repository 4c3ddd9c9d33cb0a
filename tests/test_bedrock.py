"""qiao.providers.bedrock: SigV4, URL, body, event-stream framing and chunk → SSE."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import zlib
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

import aiohttp
import pytest
import yarl
from aiohttp import web

from qiao.errors import InvalidRequest, UpstreamProtocolError
from qiao.providers.bedrock import (
    BEDROCK_VERSION,
    MAX_FRAME_BYTES,
    EventStreamDecoder,
    _canonical_uri,
    anthropic_error_type,
    bearer_headers,
    bedrock_chunks_to_sse,
    encode_frame,
    invoke_url,
    sigv4_headers,
    to_bedrock_body,
)

# The documented example credentials of AWS's SigV4 test suite.
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SUITE_TIME = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 9, 30, 5, tzinfo=UTC)
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v1:0"


def suite_sign(method, url, headers=None, *, now=SUITE_TIME, session_token=None):
    """Signed as in AWS's SigV4 test suite (region us-east-1, service "service")."""
    return sigv4_headers(
        method,
        url,
        headers or {},
        None,
        access_key=AKID,
        secret_key=SECRET,
        session_token=session_token,
        region="us-east-1",
        service="service",
        now=now,
    )


# --- SigV4: AWS's published test suite ------------------------------------------------------


def test_sigv4_get_vanilla_vector():
    headers = suite_sign("GET", "https://example.amazonaws.com/")

    assert headers == {
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": "AWS4-HMAC-SHA256 "
        "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    }


def test_sigv4_post_vanilla_vector():
    headers = suite_sign("POST", "https://example.amazonaws.com/")

    assert headers["Authorization"].endswith(
        "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
    )


def test_sigv4_converts_an_aware_time_to_utc():
    plus_two = SUITE_TIME.astimezone(timezone(timedelta(hours=2)))

    assert suite_sign("GET", "https://example.amazonaws.com/", now=plus_two) == suite_sign(
        "GET", "https://example.amazonaws.com/"
    )


def test_sigv4_rejects_a_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        suite_sign("GET", "https://example.amazonaws.com/", now=datetime(2015, 8, 30, 12, 36))


def test_sigv4_replaces_stale_auth_headers_and_keeps_the_rest():
    stale = {"authorization": "old", "x-amz-date": "19990101T000000Z", "Content-Type": "x/y"}

    headers = suite_sign("GET", "https://example.amazonaws.com/", stale)

    assert set(headers) == {"Content-Type", "X-Amz-Date", "Authorization"}
    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert "SignedHeaders=content-type;host;x-amz-date," in headers["Authorization"]


def test_sigv4_signs_the_session_token():
    headers = suite_sign("GET", "https://example.amazonaws.com/", session_token="tok/en+=")

    assert headers["X-Amz-Security-Token"] == "tok/en+="
    assert "SignedHeaders=host;x-amz-date;x-amz-security-token," in headers["Authorization"]


def test_sigv4_leaves_user_agent_unsigned():
    plain = suite_sign("GET", "https://example.amazonaws.com/")
    with_agent = suite_sign("GET", "https://example.amazonaws.com/", {"User-Agent": "qiao/1"})

    assert with_agent["Authorization"] == plain["Authorization"]


@pytest.mark.parametrize(
    ("wire_path", "canonical"),
    [
        ("", "/"),
        ("/", "/"),
        (f"/model/{MODEL}/invoke", f"/model/{MODEL.replace(':', '%3A')}/invoke"),
        # an id sent percent-encoded is encoded once more, as AWS does for non-S3 services
        ("/model/a%3A0/invoke", "/model/a%253A0/invoke"),
        ("/model/arn:x%2Fy/invoke", "/model/arn%3Ax%252Fy/invoke"),
        ("/a b/~c", "/a%20b/~c"),
    ],
)
def test_canonical_uri_encodes_each_wire_segment_once(wire_path, canonical):
    assert _canonical_uri(wire_path) == canonical


# --- SigV4: botocore as the oracle ----------------------------------------------------------


def botocore_authorization(method, url, headers, body, token=None, *, region="us-west-2"):
    """botocore's SigV4Auth.add_auth, minus its clock: the steps it runs, at NOW."""
    auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    request.context["timestamp"] = NOW.strftime("%Y%m%dT%H%M%SZ")
    signer = auth.SigV4Auth(Credentials(AKID, SECRET, token), "bedrock", region)
    signer._modify_request_before_signing(request)
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    signer._inject_signature_to_request(request, signature)
    return dict(request.headers.items())


ORACLE_CASES = {
    "invoke": ("POST", invoke_url("us-west-2", MODEL, stream=False), {}, b'{"max_tokens":1}', None),
    "stream-arn": ("POST", invoke_url("us-west-2", PROFILE_ARN, stream=True), {}, b"{}", None),
    "encoded-colon": (
        "POST",
        "https://bedrock-runtime.us-west-2.amazonaws.com/model/a%3A0/invoke",
        {},
        b"",
        None,
    ),
    "session-token": (
        "POST",
        invoke_url("us-west-2", MODEL, stream=False),
        {},
        b"{}",
        "FQoGZXIvYXdzE//Z+==",
    ),
    "headers": (
        "POST",
        invoke_url("us-west-2", MODEL, stream=True),
        {
            "Content-Type": "application/json",
            "Accept": "application/vnd.amazon.eventstream",
            "X-Custom": "  spaced   out  value ",
            "User-Agent": "qiao/0.1",
        },
        b'{"messages":[]}',
        None,
    ),
    "query": (
        "GET",
        "https://bedrock.us-west-2.amazonaws.com/foundation-models?byProvider=anthropic&a=b%20c&a=a",
        {},
        None,
        None,
    ),
    "port": (
        "POST",
        "http://127.0.0.1:8443/model/x/invoke",
        {"Content-Type": "application/json"},
        b"{}",
        None,
    ),
    "default-port": (
        "POST",
        "https://bedrock-runtime.us-west-2.amazonaws.com:443/model/x/invoke",
        {},
        b"{}",
        None,
    ),
}


@pytest.mark.parametrize("case", ORACLE_CASES.values(), ids=list(ORACLE_CASES))
def test_sigv4_matches_botocore(case):
    method, url, headers, body, token = case
    expected = botocore_authorization(method, url, headers, body, token)

    ours = sigv4_headers(
        method,
        url,
        headers,
        body,
        access_key=AKID,
        secret_key=SECRET,
        session_token=token,
        region="us-west-2",
        now=NOW,
    )

    assert ours == expected


# --- URL, body, bearer key -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (
            ("us-east-1", "anthropic.claude-v2:1", False, None),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-v2:1/invoke",
        ),
        (
            ("eu-central-1", "anthropic.claude-v2:1", True, None),
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/anthropic.claude-v2:1"
            "/invoke-with-response-stream",
        ),
        (
            ("us-east-1", "arn:aws:bedrock:us-east-1:1:inference-profile/us.x:0", False, None),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
            "arn:aws:bedrock:us-east-1:1:inference-profile%2Fus.x:0/invoke",
        ),
        (
            ("us-east-1", "m 1+2#?", False, "http://127.0.0.1:9/"),
            "http://127.0.0.1:9/model/m%201%2B2%23%3F/invoke",
        ),
    ],
)
def test_invoke_url(args, url):
    region, model, stream, base = args

    assert invoke_url(region, model, stream=stream, base_url=base) == url


@pytest.mark.parametrize("region", ["", "US-EAST-1", "evil.com/x#", "us-east-1.", "a b"])
def test_invoke_url_rejects_a_bad_region(region):
    with pytest.raises(ValueError, match="region"):
        invoke_url(region, MODEL, stream=False)


def test_invoke_url_rejects_an_empty_model():
    with pytest.raises(ValueError, match="model"):
        invoke_url("us-east-1", "", stream=False)


@pytest.mark.parametrize(
    "model", [MODEL, PROFILE_ARN, "a@b!$&'()*,;=~.-_x", "per%cent", "sp ace+plus", "ünï"]
)
def test_invoke_url_survives_aiohttp_url_normalisation(model):
    # aiohttp sends yarl's normalised path; it must be the path we signed.
    url = invoke_url("us-east-1", model, stream=True)

    assert yarl.URL(url).raw_path == urlsplit(url).path


def test_to_bedrock_body_moves_routing_out_and_adds_the_version():
    body = {"model": "claude", "stream": True, "max_tokens": 5, "messages": []}

    out = to_bedrock_body(body)

    assert out == {"max_tokens": 5, "messages": [], "anthropic_version": BEDROCK_VERSION}
    assert body["model"] == "claude"  # the input is not mutated


def test_to_bedrock_body_keeps_a_given_version():
    assert to_bedrock_body({"anthropic_version": "x"})["anthropic_version"] == "x"


@pytest.mark.parametrize(
    ("in_body", "beta", "expected"),
    [
        (None, None, None),
        (None, "a-1, b-2", ["a-1", "b-2"]),
        (None, ["a-1"], ["a-1"]),
        (["a-1"], "b-2,a-1,,", ["a-1", "b-2"]),
        ([], None, None),
    ],
)
def test_to_bedrock_body_merges_betas(in_body, beta, expected):
    body = {"max_tokens": 1} if in_body is None else {"max_tokens": 1, "anthropic_beta": in_body}

    out = to_bedrock_body(body, beta=beta)

    assert out.get("anthropic_beta") == expected


@pytest.mark.parametrize("bad", ["a,b", [1], {"a": 1}])
def test_to_bedrock_body_rejects_a_bad_beta_field(bad):
    with pytest.raises(InvalidRequest) as info:
        to_bedrock_body({"anthropic_beta": bad})

    assert info.value.param == "anthropic_beta"


def test_bearer_headers_replace_any_authorization():
    headers = bearer_headers({"authorization": "AWS4 x", "Content-Type": "a/b"}, "ABSK-key")

    assert headers == {"Content-Type": "a/b", "Authorization": "Bearer ABSK-key"}


# --- event-stream framing --------------------------------------------------------------------

FRAMES = [
    ({":message-type": "event", ":event-type": "chunk"}, b'{"bytes":"e30="}'),
    ({":message-type": "event", ":event-type": "chunk", ":content-type": "x"}, b"\x00\xff" * 40),
    ({}, b""),
    ({"ünïcode": "välue"}, b"payload"),
]
STREAM = b"".join(encode_frame(h, p) for h, p in FRAMES)


def test_event_stream_round_trip():
    assert EventStreamDecoder().feed(STREAM) == FRAMES


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_event_stream_split_anywhere(cut):
    decoder = EventStreamDecoder()

    frames = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])

    assert frames == FRAMES
    decoder.close()


def test_event_stream_one_byte_at_a_time():
    decoder = EventStreamDecoder()

    frames = [f for i in range(len(STREAM)) for f in decoder.feed(STREAM[i : i + 1])]

    assert frames == FRAMES


def test_event_stream_frames_decode_with_botocore():
    eventstream = pytest.importorskip("botocore.eventstream")
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(STREAM)

    decoded = [(m.headers, m.payload) for m in buffer]

    assert decoded == FRAMES


def corrupt(frame: bytes, index: int) -> bytes:
    return frame[:index] + bytes([frame[index] ^ 0x01]) + frame[index + 1 :]


@pytest.mark.parametrize(
    ("index", "why"),
    [
        (0, "prelude CRC"),
        (5, "prelude CRC"),
        (9, "prelude CRC"),
        (14, "message CRC"),
        (-1, "message CRC"),
    ],
)
def test_event_stream_rejects_a_crc_mismatch(index, why):
    frame = encode_frame({":event-type": "chunk"}, b"hello")

    with pytest.raises(UpstreamProtocolError, match=why):
        EventStreamDecoder().feed(corrupt(frame, index % len(frame)))


def test_event_stream_keeps_rejecting_after_an_error():
    decoder = EventStreamDecoder()
    with pytest.raises(UpstreamProtocolError):
        decoder.feed(corrupt(encode_frame({}, b"x"), 12))

    with pytest.raises(UpstreamProtocolError):
        decoder.feed(encode_frame({}, b"y"))


def prelude(total: int, headers_len: int) -> bytes:
    head = struct.pack(">II", total, headers_len)
    return head + struct.pack(">I", zlib.crc32(head))


def test_event_stream_refuses_an_oversized_frame_before_buffering_it():
    with pytest.raises(UpstreamProtocolError, match="exceeds"):
        EventStreamDecoder().feed(prelude(MAX_FRAME_BYTES + 1, 0))


def test_event_stream_waits_for_a_frame_of_the_maximum_size():
    assert EventStreamDecoder().feed(prelude(MAX_FRAME_BYTES, 0)) == []


@pytest.mark.parametrize(("total", "headers_len"), [(0, 0), (15, 0), (16, 1), (20, 5)])
def test_event_stream_rejects_impossible_lengths(total, headers_len):
    with pytest.raises(UpstreamProtocolError, match="impossible lengths"):
        EventStreamDecoder().feed(prelude(total, headers_len))


def raw_frame(raw_headers: bytes, payload: bytes = b"") -> bytes:
    message = (
        prelude(16 + len(raw_headers) + len(payload), len(raw_headers)) + raw_headers + payload
    )
    return message + struct.pack(">I", zlib.crc32(message))


def header(name: str, kind: int, value: bytes = b"") -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def test_event_stream_skips_non_string_headers():
    raw = b"".join(
        [
            header("t", 0),
            header("f", 1),
            header("byte", 2, b"\x07"),
            header("short", 3, b"\x00\x07"),
            header("int", 4, b"\x00\x00\x00\x07"),
            header("long", 5, b"\x00" * 8),
            header("bytes", 6, b"\x00\x03abc"),
            header("time", 8, b"\x00" * 8),
            header("uuid", 9, b"\x11" * 16),
            header(":event-type", 7, b"\x00\x05chunk"),
        ]
    )

    assert EventStreamDecoder().feed(raw_frame(raw, b"p")) == [({":event-type": "chunk"}, b"p")]


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (header("x", 10), "unknown header type 10"),
        (header("x", 7, b"\x00\x09abc"), "overrun"),
        (header("x", 4, b"\x00"), "overrun"),
        (b"\x05ab", "bad headers"),
        (header("x", 7, b"\x00\x02\xff\xfe"), "bad headers"),
    ],
)
def test_event_stream_rejects_bad_headers(raw, why):
    with pytest.raises(UpstreamProtocolError, match=why):
        EventStreamDecoder().feed(raw_frame(raw))


def test_event_stream_close_reports_a_cut_frame():
    decoder = EventStreamDecoder()
    decoder.feed(STREAM[:5])

    with pytest.raises(UpstreamProtocolError, match="5 bytes left over"):
        decoder.close()


def test_encode_frame_rejects_an_overlong_header():
    with pytest.raises(ValueError, match="too long"):
        encode_frame({"x" * 256: "v"}, b"")


# --- frames → Anthropic SSE ------------------------------------------------------------------

ANTHROPIC_EVENTS = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hé\n"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 3}},
]


def chunk(event: dict | bytes) -> tuple[dict[str, str], bytes]:
    data = event if isinstance(event, bytes) else json.dumps(event).encode()
    payload = json.dumps({"bytes": base64.b64encode(data).decode(), "p": "abcd"}).encode()
    return {
        ":message-type": "event",
        ":event-type": "chunk",
        ":content-type": "application/json",
    }, payload


def exception(name: str, message: str = "slow down") -> tuple[dict[str, str], bytes]:
    headers = {":message-type": "exception", ":exception-type": name}
    return headers, json.dumps({"message": message}).encode()


def parse_sse(text: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in text.decode().split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        events.append((event_line[7:], json.loads(data_line[6:])))
    return events


def test_chunks_become_anthropic_sse():
    sse = bedrock_chunks_to_sse([chunk(e) for e in ANTHROPIC_EVENTS])

    assert sse.endswith(b"\n\n")
    assert parse_sse(sse) == [(e["type"], e) for e in ANTHROPIC_EVENTS]


def test_chunk_data_is_relayed_byte_for_byte():
    data = b'{"type": "ping",  "x": 1.50}'

    assert bedrock_chunks_to_sse([chunk(data)]) == b"event: ping\ndata: " + data + b"\n\n"


def test_a_multi_line_chunk_is_put_on_one_line():
    data = b'{\n  "type": "ping"\r\n}'

    assert bedrock_chunks_to_sse([chunk(data)]) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_other_event_frames_are_dropped():
    frames = [({":message-type": "event", ":event-type": "initial-response"}, b"{}"), ({}, b"")]

    assert bedrock_chunks_to_sse(frames) == b""


@pytest.mark.parametrize(
    ("name", "error_type"),
    [
        ("throttlingException", "rate_limit_error"),
        ("modelStreamErrorException", "api_error"),
        ("internalServerException", "api_error"),
        ("serviceUnavailableException", "overloaded_error"),
        ("validationException", "invalid_request_error"),
        ("ThrottlingException", "rate_limit_error"),
        ("modelTimeoutException", "timeout_error"),
        ("somethingNewException", "api_error"),
        ("", "api_error"),
    ],
)
def test_exceptions_become_anthropic_errors(name, error_type):
    sse = bedrock_chunks_to_sse([exception(name)])

    assert parse_sse(sse) == [
        ("error", {"type": "error", "error": {"type": error_type, "message": "slow down"}})
    ]
    assert anthropic_error_type(name) == error_type


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b'{"Message":"capital"}', "capital"), (b"plain text", "plain text"), (b"[1]", "[1]")],
)
def test_exception_messages_are_read_leniently(payload, message):
    headers = {":message-type": "exception", ":exception-type": "internalServerException"}

    ((_, data),) = parse_sse(bedrock_chunks_to_sse([(headers, payload)]))

    assert data["error"]["message"] == message


def test_error_frames_become_anthropic_errors():
    headers = {
        ":message-type": "error",
        ":error-code": "ThrottlingException",
        ":error-message": "m",
    }

    ((name, data),) = parse_sse(bedrock_chunks_to_sse([(headers, b"")]))

    assert (name, data["error"]) == ("error", {"type": "rate_limit_error", "message": "m"})


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"bytes": 5}',
        b'{"bytes": "***"}',
        json.dumps({"bytes": base64.b64encode(b"not json").decode()}).encode(),
        json.dumps({"bytes": base64.b64encode(b'{"no":"type"}').decode()}).encode(),
        json.dumps({"bytes": base64.b64encode(b'{"type":"a\\nb"}').decode()}).encode(),
        json.dumps({"bytes": base64.b64encode(b'{"type":7}').decode()}).encode(),
    ],
)
def test_malformed_chunks_are_rejected(payload):
    headers = {":message-type": "event", ":event-type": "chunk"}

    with pytest.raises(UpstreamProtocolError, match="chunk"):
        bedrock_chunks_to_sse([(headers, payload)])


# --- end to end over loopback ----------------------------------------------------------------


def test_signed_streaming_call_over_loopback():
    """A fake Bedrock checks the signature against the request it received and streams frames
    cut at awkward places; the client decodes them into Anthropic SSE."""
    stream = b"".join(encode_frame(*chunk(e)) for e in ANTHROPIC_EVENTS)
    stream += encode_frame(*exception("throttlingException", "Too many tokens"))
    seen: dict[str, object] = {}

    async def invoke(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen["path"] = request.raw_path
        # verify as AWS does: recompute over the received request and its SignedHeaders
        authorization = request.headers["Authorization"]
        signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        seen["signed"] = signed
        recomputed = sigv4_headers(
            request.method,
            f"http://{request.host}{request.raw_path}",
            {name: request.headers[name] for name in signed},
            body,
            access_key=AKID,
            secret_key=SECRET,
            session_token=request.headers.get("X-Amz-Security-Token"),
            region="us-east-1",
            now=datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%S%z"),
        )
        seen["signature_ok"] = recomputed["Authorization"] == authorization
        response = web.StreamResponse(
            headers={"Content-Type": "application/vnd.amazon.eventstream"}
        )
        await response.prepare(request)
        for start in range(0, len(stream), 37):
            await response.write(stream[start : start + 37])
        await response.write_eof()
        return response

    async def main() -> bytes:
        app = web.Application()
        app.router.add_post("/model/{model_id}/invoke-with-response-stream", invoke)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            url = invoke_url("us-east-1", MODEL, stream=True, base_url=f"http://127.0.0.1:{port}")
            body = json.dumps(to_bedrock_body({"model": "m", "max_tokens": 9})).encode()
            headers = sigv4_headers(
                "POST",
                url,
                {"Content-Type": "application/json"},
                body,
                access_key=AKID,
                secret_key=SECRET,
                session_token="session",
                region="us-east-1",
                now=NOW,
            )
            decoder, sse = EventStreamDecoder(), b""
            async with aiohttp.ClientSession() as session:
                async with session.post(url, data=body, headers=headers) as response:
                    async for data in response.content.iter_any():
                        sse += bedrock_chunks_to_sse(decoder.feed(data))
            decoder.close()
            return sse
        finally:
            await runner.cleanup()

    sse = asyncio.run(main())

    assert seen == {
        "path": f"/model/{MODEL}/invoke-with-response-stream",
        "signed": ["content-type", "host", "x-amz-date", "x-amz-security-token"],
        "signature_ok": True,
    }
    assert parse_sse(sse) == [(e["type"], e) for e in ANTHROPIC_EVENTS] + [
        (
            "error",
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Too many tokens"}},
        )
    ]
