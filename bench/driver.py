"""The Python side of the load rig: open-loop, streaming and open-streams drivers.

wrk measures closed-loop throughput; these measure what wrk cannot: a fixed
request rate (no coordinated omission: a request is sent on schedule whether or
not earlier ones have answered), time to first token of a stream, and many
streams held open at once. Every loop is bounded in count and in time.

Standalone use (against any OpenAI-compatible URL on this machine)::

    python bench/driver.py open-loop --url http://127.0.0.1:9001 --rate 50 --seconds 20
    python bench/driver.py stream --url http://127.0.0.1:9001 --n 200
    python bench/driver.py hold --url http://127.0.0.1:9001 --n 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

KEY = "sk-bench-client-key-123"
PATH = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]


def headers(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def body(
    model: str,
    *,
    stream: bool = False,
    usage: bool = False,
    messages: list[dict[str, str]] | None = None,
) -> bytes:
    obj: dict[str, Any] = {"model": model, "messages": messages or MESSAGES, "max_tokens": 16}
    if stream:
        obj["stream"] = True
        if usage:
            obj["stream_options"] = {"include_usage": True}
    return orjson.dumps(obj)


_PROSE = (
    "Our warehouse in Rotterdam ships pallets to twelve regional depots every weekday. "
    "Each depot reports stock levels at noon, and late reports delay the evening plan. "
    "Drivers work in two shifts; the second shift starts at fourteen hundred hours. "
)


def messages_2k(size: int = 2048, model: str = "pt-bench") -> list[dict[str, str]]:
    """A four-message chat (system, user, assistant, user) whose non-streaming OpenAI body for
    ``model`` is exactly ``size`` bytes: the request of the translation scenarios."""

    def prose(n: int, offset: int) -> str:
        text = (_PROSE * (1 + (n + offset) // len(_PROSE)))[offset : offset + n]
        return text.strip() or "ok"

    msgs = [
        {"role": "system", "content": "You are a concise planning assistant. " + prose(260, 0)},
        {"role": "user", "content": "Here is today's situation. " + prose(620, 40)},
        {"role": "assistant", "content": "Understood. A summary: " + prose(420, 90)},
        {"role": "user", "content": ""},
    ]
    short = len(body(model, messages=msgs))
    msgs[-1]["content"] = prose(max(1, size - short), 150)
    while len(body(model, messages=msgs)) > size and len(msgs[-1]["content"]) > 1:
        msgs[-1]["content"] = msgs[-1]["content"][:-1]
    return msgs


def anthropic_body(model: str, messages: list[dict[str, str]], *, stream: bool = False) -> bytes:
    """The same chat as an Anthropic Messages body (for requests sent straight to the fake)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    obj: dict[str, Any] = {
        "model": model,
        "max_tokens": 16,
        "messages": [m for m in messages if m["role"] != "system"],
    }
    if system:
        obj["system"] = system
    if stream:
        obj["stream"] = True
    return orjson.dumps(obj)


def anthropic_headers(key: str = KEY) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01", "Content-Type": "application/json"}


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": percentile(values, 50) * 1000,
        "p90_ms": percentile(values, 90) * 1000,
        "p99_ms": percentile(values, 99) * 1000,
        "max_ms": (max(values) if values else math.nan) * 1000,
    }


def _session(limit: int = 0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, keepalive_timeout=30, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent",),
    )


# --------------------------------------------------------------------- open loop


@dataclass
class OpenLoopResult:
    latencies: list[float] = field(default_factory=list)
    ref_latencies: list[float] = field(default_factory=list)
    errors: int = 0
    ref_errors: int = 0
    sent: int = 0
    total_sent: int = 0  # including the unmeasured warm-up
    max_lateness_ms: float = 0.0
    error_sample: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {
            **summary_ms(self.latencies),
            "sent": self.sent,
            "total_sent": self.total_sent,
            "errors": self.errors,
            "max_send_lateness_ms": round(self.max_lateness_ms, 3),
            "error_sample": self.error_sample,
        }
        if self.ref_latencies or self.ref_errors:
            out["ref"] = {**summary_ms(self.ref_latencies), "errors": self.ref_errors}
        return out


async def open_loop(
    base_url: str,
    model: str,
    rate: float,
    seconds: float,
    *,
    ref_url: str | None = None,
    key: str = KEY,
    request_timeout: float = 10.0,
    warmup: int = 20,
    data: bytes | None = None,
) -> OpenLoopResult:
    """Send ``rate`` requests per second for ``seconds``, each on schedule.

    With ``ref_url`` (the fake itself), every tick also sends the same request
    there at the same moment: a reference measured in the same time window, so
    that "added latency" compares like with like on a noisy machine.
    """
    url = base_url.rstrip("/") + PATH
    ref = ref_url.rstrip("/") + PATH if ref_url else None
    hdrs = headers(key)
    data = data or body(model)
    res = OpenLoopResult()
    async with _session() as session:

        async def one(target: str, record: bool, is_ref: bool = False) -> None:
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(request_timeout):
                    async with session.post(target, data=data, headers=hdrs) as r:
                        await r.read()
                        ok = r.status == 200
                        if not ok and not res.error_sample:
                            res.error_sample = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                ok = False
                if not res.error_sample:
                    res.error_sample = type(exc).__name__
            if not record:
                return
            if is_ref:
                if ok:
                    res.ref_latencies.append(time.perf_counter() - t0)
                else:
                    res.ref_errors += 1
            elif ok:
                res.latencies.append(time.perf_counter() - t0)
            else:
                res.errors += 1

        # warm the client's (and the gateway's) connection pools, unmeasured
        await asyncio.gather(*(one(url, False) for _ in range(min(warmup, 5))))
        for _ in range(max(0, warmup - 5)):
            await one(url, False)
        res.total_sent = warmup

        n = int(rate * seconds)
        interval = 1.0 / rate
        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(n):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            res.max_lateness_ms = max(res.max_lateness_ms, (time.perf_counter() - due) * 1000)
            tasks.append(asyncio.ensure_future(one(url, True)))
            if ref:
                tasks.append(asyncio.ensure_future(one(ref, True, is_ref=True)))
            res.sent += 1
            res.total_sent += 1
        await asyncio.wait(tasks, timeout=request_timeout + 1)
    return res


@dataclass
class Series:
    """One stream of requests in :func:`open_loop_series`."""

    name: str
    url: str  # the full URL
    data: bytes
    headers: dict[str, str]
    offset: float = 0.0  # fraction of the interval by which this series' ticks are shifted


async def open_loop_series(
    series: Sequence[Series],
    rate: float,
    seconds: float,
    *,
    request_timeout: float = 10.0,
    warmup: int = 20,
) -> dict[str, OpenLoopResult]:
    """Several open loops in one time window: each series sends ``rate`` requests per second on
    its own schedule, shifted by ``offset`` of the interval so that the series do not contend
    for the same instant. Compares, say, passthrough with translation under the same noise."""
    interval = 1.0 / rate
    results = {s.name: OpenLoopResult() for s in series}
    async with _session() as session:

        async def one(s: Series, record: bool) -> None:
            res = results[s.name]
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(request_timeout):
                    async with session.post(s.url, data=s.data, headers=s.headers) as r:
                        await r.read()
                        ok = r.status == 200
                        if not ok and not res.error_sample:
                            res.error_sample = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                ok = False
                if not res.error_sample:
                    res.error_sample = type(exc).__name__
            if not record:
                return
            if ok:
                res.latencies.append(time.perf_counter() - t0)
            else:
                res.errors += 1

        for s in series:
            await asyncio.gather(*(one(s, False) for _ in range(min(warmup, 5))))
            for _ in range(max(0, warmup - 5)):
                await one(s, False)
            results[s.name].total_sent = warmup

        ticks = sorted(
            (i * interval + (s.offset % 1.0) * interval, k)
            for i in range(int(rate * seconds))
            for k, s in enumerate(series)
        )
        tasks = []
        start = time.perf_counter() + 0.05
        for at, k in ticks:
            s = series[k]
            due = start + at
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            res = results[s.name]
            res.max_lateness_ms = max(res.max_lateness_ms, (time.perf_counter() - due) * 1000)
            tasks.append(asyncio.ensure_future(one(s, True)))
            res.sent += 1
            res.total_sent += 1
        await asyncio.wait(tasks, timeout=request_timeout + 1)
    return results


# --------------------------------------------------------------------- streaming


@dataclass
class StreamResult:
    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    ref_ttft: list[float] = field(default_factory=list)
    ref_total: list[float] = field(default_factory=list)
    errors: int = 0
    total_sent: int = 0  # to the target, including the unmeasured warm-up
    error_sample: str = ""

    def to_json(self) -> dict[str, Any]:
        out = {
            "ttft": summary_ms(self.ttft),
            "total": summary_ms(self.total),
            "content_chunks_min": min(self.chunks) if self.chunks else 0,
            "content_chunks_max": max(self.chunks) if self.chunks else 0,
            "errors": self.errors,
            "total_sent": self.total_sent,
            "error_sample": self.error_sample,
        }
        if self.ref_ttft:
            out["ref"] = {"ttft": summary_ms(self.ref_ttft), "total": summary_ms(self.ref_total)}
        return out


def _has_content(event: bytes) -> bool:
    """Whether an SSE event carries a non-empty delta content (a token)."""
    for line in event.split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            return False
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                return True
    return False


async def _read_stream(
    resp: aiohttp.ClientResponse, t0: float, on_first: Callable[[], None] | None = None
) -> tuple[float | None, int, bool]:
    """(time to first content, content chunks, saw [DONE])."""
    buf = b""
    first: float | None = None
    count = 0
    done = False
    async for data in resp.content.iter_any():
        buf += data
        while True:
            cut = buf.find(b"\n\n")
            if cut < 0:
                break
            event, buf = buf[:cut], buf[cut + 2 :]
            if event.startswith(b"data: [DONE]"):
                done = True
                continue
            if _has_content(event):
                count += 1
                if first is None:
                    first = time.perf_counter() - t0
                    if on_first is not None:
                        on_first()
    return first, count, done


async def stream_ttft(
    base_url: str,
    model: str,
    n: int,
    *,
    ref_url: str | None = None,
    concurrency: int = 1,
    key: str = KEY,
    request_timeout: float = 15.0,
    deadline_s: float = 120.0,
    warmup: int = 10,
    data: bytes | None = None,
) -> StreamResult:
    """``n`` streamed requests, ``concurrency`` at a time: time to first token and total.

    With ``ref_url``, each worker alternates target and reference requests, so
    both are measured in the same time window.
    """
    url = base_url.rstrip("/") + PATH
    ref = ref_url.rstrip("/") + PATH if ref_url else None
    hdrs = headers(key)
    data = data or body(model, stream=True)
    res = StreamResult()
    stop_at = time.perf_counter() + deadline_s
    async with _session() as session:

        async def one(target: str, record: bool, is_ref: bool = False) -> None:
            t0 = time.perf_counter()
            if not is_ref:
                res.total_sent += 1
            try:
                async with asyncio.timeout(request_timeout):
                    async with session.post(target, data=data, headers=hdrs) as r:
                        if r.status != 200:
                            raise RuntimeError(f"HTTP {r.status}")
                        first, count, done = await _read_stream(r, t0)
                if first is None or not done:
                    raise RuntimeError("stream without content or [DONE]")
            except (aiohttp.ClientError, TimeoutError, OSError, RuntimeError) as exc:
                if record and not is_ref:
                    res.errors += 1
                    res.error_sample = res.error_sample or f"{type(exc).__name__}: {exc}"
                return
            if not record:
                return
            if is_ref:
                res.ref_ttft.append(first)
                res.ref_total.append(time.perf_counter() - t0)
            else:
                res.ttft.append(first)
                res.total.append(time.perf_counter() - t0)
                res.chunks.append(count)

        for _ in range(warmup):
            await one(url, False)
        counter = iter(range(n))

        async def worker() -> None:
            for _ in counter:
                if time.perf_counter() > stop_at:
                    return
                await one(url, True)
                if ref:
                    await one(ref, True, is_ref=True)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return res


# --------------------------------------------------------------------- open streams


@dataclass
class HoldResult:
    requested: int = 0
    established: int = 0
    errors: int = 0
    ramp_s: float = 0.0
    error_sample: str = ""
    samples: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "established": self.established,
            "errors": self.errors,
            "ramp_s": round(self.ramp_s, 2),
            "error_sample": self.error_sample,
        }


async def hold_streams(
    base_url: str,
    model: str,
    n: int,
    *,
    key: str = KEY,
    establish_s: float = 30.0,
    hold_s: float = 3.0,
    sample: Callable[[], float] | None = None,
    sample_every: float = 0.5,
    data: bytes | None = None,
) -> HoldResult:
    """Open ``n`` streams at once, wait until each has its first token, hold, close.

    ``sample`` (e.g. the gateway's RSS) is called every ``sample_every`` seconds
    from the first request until the streams are closed; the values are kept in
    ``samples``. At most ``establish_s + hold_s`` seconds plus the close.
    """
    url = base_url.rstrip("/") + PATH
    hdrs = headers(key)
    data = data or body(model, stream=True)
    res = HoldResult(requested=n)
    all_up = asyncio.Event()

    def first_token() -> None:
        res.established += 1
        if res.established >= n:
            all_up.set()

    async with _session() as session:

        async def one() -> None:
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=data, headers=hdrs) as r:
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}")
                    await _read_stream(r, t0, first_token)
            except (aiohttp.ClientError, OSError, RuntimeError) as exc:
                res.errors += 1
                res.error_sample = res.error_sample or f"{type(exc).__name__}: {exc}"

        async def sampler() -> None:
            while sample is not None:
                res.samples.append(sample())
                await asyncio.sleep(sample_every)

        sampling = asyncio.ensure_future(sampler())
        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            tasks.append(asyncio.ensure_future(one()))
            if i % 50 == 49:
                await asyncio.sleep(0.01)  # a short ramp: ~0.2 s per 1,000
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(establish_s):
                await all_up.wait()
        res.ramp_s = time.perf_counter() - t0
        await asyncio.sleep(hold_s)
        sampling.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=10)
    return res


# --------------------------------------------------------------------- CLI


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("open-loop", "stream", "hold"):
        s = sub.add_parser(name)
        s.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:9001")
        s.add_argument("--key", default=KEY)
        s.add_argument("--ref", help="reference base URL measured alongside (the fake)")
    ol = sub.choices["open-loop"]
    ol.add_argument("--model", default="bench-d50")
    ol.add_argument("--rate", type=float, default=50)
    ol.add_argument("--seconds", type=float, default=20)
    st = sub.choices["stream"]
    st.add_argument("--model", default="bench-c1")
    st.add_argument("--n", type=int, default=200)
    st.add_argument("--concurrency", type=int, default=1)
    ho = sub.choices["hold"]
    ho.add_argument("--model", default="bench-hold60")
    ho.add_argument("--n", type=int, default=1000)
    ho.add_argument("--seconds", type=float, default=30)
    args = p.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        p.error("the driver only sends to this machine (127.0.0.0/8, localhost, ::1)")
    out: Any
    if args.cmd == "open-loop":
        rate, secs = min(args.rate, 5000), min(args.seconds, 600)
        r = open_loop(args.url, args.model, rate, secs, ref_url=args.ref, key=args.key)
        out = _run(r).to_json()
    elif args.cmd == "stream":
        n = min(args.n, 100_000)
        r = stream_ttft(
            args.url, args.model, n, ref_url=args.ref, concurrency=args.concurrency, key=args.key
        )
        out = _run(r).to_json()
    else:
        secs = min(args.seconds, 600)
        r = hold_streams(args.url, args.model, min(args.n, 20_000), key=args.key, hold_s=secs)
        out = _run(r).to_json()
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
