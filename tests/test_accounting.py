"""Accounting of streams cut off before the upstream reported usage: charged what was relayed
(estimated), recorded as it goes, so a crash leaves the estimate too — never 0."""

from __future__ import annotations

import http.client
import time
from typing import Any

import orjson
import pytest
from conftest import ADMIN_KEY, CLIENT_KEY
from gateway import CEILING, Gateway, eventually

from qiao.accounting import Accounting, OutputMeter
from qiao.canonical import ReasoningDelta, TextDelta, ToolCallDelta
from qiao.observability.accesslog import RequestRecord
from qiao.pricing import PriceTable
from qiao.storage.models import UsageRecord

WORDS = " ".join(f"word{i}" for i in range(200))  # "word12": 6 characters, about 2 tokens
CONFIG = f"""
listen: 127.0.0.1:0
admin_key: {ADMIN_KEY}
providers:
  slow: {{type: mock, mock: {{tokens_per_second: 50, reply: "{WORDS}"}}}}
models:
  gpt-4o-mini: [{{provider: slow}}]
keys: [{{name: tester, key: {CLIENT_KEY}}}]
server: {{access_log: false}}
"""


class Writer:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def record(self, rec: UsageRecord) -> None:
        self.records.append(rec)


def _record(usage: dict[str, int] | None = None) -> RequestRecord:
    rec = RequestRecord("req1", "POST", "/v1/chat/completions", time.perf_counter())
    rec.model, rec.provider, rec.usage = "gpt-4o-mini", "openai", usage
    return rec


def test_the_meter_counts_text_like_the_token_estimate() -> None:
    meter = OutputMeter()
    meter.event(TextDelta("Hello, world"))  # 12 ASCII characters
    meter.event(ReasoningDelta("thinking"))  # 8
    meter.event(ToolCallDelta('{"a":1}'))  # 7, then 27 ASCII: 7 tokens
    meter.text("你好")  # two CJK characters: a token each
    assert meter.tokens == 7 + 2
    meter.chunks = 50  # a passthrough's chunks, when more
    assert meter.tokens == 50


def test_progress_rows_carry_what_was_relayed_and_the_settle_the_real_figure() -> None:
    writer = Writer()
    accounting = Accounting(writer, PriceTable.default())  # type: ignore[arg-type]
    rec = _record()
    attempt = accounting.pending(rec, 1)
    meter = accounting.track(rec, attempt)
    meter.chunks = 30
    accounting.record_progress()
    accounting.record_progress()  # nothing new relayed: no new row
    meter.chunks = 40
    accounting.record_progress()
    progress = writer.records[1:]
    assert [(r.status, r.output_tokens) for r in progress] == [("pending", 30), ("pending", 40)]
    assert progress[-1].cost > 0  # priced like any row
    rec.usage = {"input_tokens": 11, "output_tokens": 45}  # the upstream said, at the end
    accounting.settle(rec, attempt, "ok", 200)
    last = writer.records[-1]
    assert (last.status, last.input_tokens, last.output_tokens) == ("ok", 11, 45)
    accounting.record_progress()
    assert writer.records[-1] is last  # settled: no longer tracked


def _usage_rows(gw: Gateway) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=CEILING)
    try:
        conn.request("GET", "/admin/usage", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        resp = conn.getresponse()
        assert resp.status == 200
        return list(orjson.loads(resp.read())["data"])
    finally:
        conn.close()


def _cut_off(gw: Gateway, path: str, body: dict[str, Any], events: int) -> None:
    """Stream, read ``events`` data lines with text, hang up."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=CEILING)
    try:
        headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
        conn.request("POST", path, body=orjson.dumps(body), headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        seen = 0
        while seen < events:
            line = resp.readline()
            assert line, "the stream ended early"
            seen += line.startswith(b"data:") and b"word" in line
    finally:
        conn.close()  # the client is gone


@pytest.mark.parametrize(
    ("path", "body", "least"),
    [
        # passthrough to an OpenAI-type upstream: about a token a chunk
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 10),
        # translated to the Anthropic protocol: the text relayed, about 4 characters a token
        (
            "/v1/messages",
            {"max_tokens": 1000, "messages": [{"role": "user", "content": "x"}]},
            10,
        ),
    ],
    ids=["passthrough", "translated"],
)
def test_a_stream_the_client_left_is_charged_what_it_relayed(
    path: str, body: dict[str, Any], least: int
) -> None:
    with Gateway(CONFIG) as gw:
        _cut_off(gw, path, {"model": "gpt-4o-mini", "stream": True, **body}, events=10)

        def settled() -> bool:
            rows = _usage_rows(gw)
            return len(rows) == 1 and rows[0]["status"] != "pending"

        eventually(settled, "the attempt settled")
        row = _usage_rows(gw)[0]
        assert row["status"] == "interrupted"
        assert least <= row["output_tokens"] < 200  # what was relayed, not 0, not the whole
        assert float(row["cost"]) > 0
