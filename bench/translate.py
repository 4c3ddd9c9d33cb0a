"""Qiao benchmark: the translation scenario — passthrough against translation on one Qiao
(split from run.py)."""

from __future__ import annotations

import math
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import driver
from procfs import (
    DEADLINE,
    GATEWAY_CORE,
    Meter,
    cpu_exact,
    log,
    rss_mb,
    wait_quiet,
)
from procs import Proc, spawn, trim_log, wait_ready
from targets import PASS, TRANS, Target, store_stats
from wrk import Plan, _uv, run_wrk, summarise_wrk, wrk_runs


def _stream_block(
    t: Target,
    gw_pid: int,
    model: str,
    n: int,
    msgs: list[dict[str, str]],
    concurrency: int,
    chunks: int,
    warmup: int = 0,
) -> dict[str, Any]:
    """``n`` streams of ``chunks`` upstream chunks through the gateway: its CPU per stream and
    per chunk (gateway CPU / (streams x chunks), warm-up streams included in both)."""
    data = driver.body(model, stream=True, messages=msgs)
    gw0 = cpu_exact(gw_pid)
    st = _uv(
        driver.stream_ttft(
            t.url, model, n, concurrency=concurrency, key=t.key, data=data, warmup=warmup
        )
    )
    cpu = cpu_exact(gw_pid) - gw0
    out = {
        "model": model,
        "streams": st.total_sent,
        "chunks": chunks,
        "concurrency": concurrency,
        "cpu_s": round(cpu, 4),
        "errors": st.errors,
        "error_sample": st.error_sample,
        "ttft": st.ttft,
        "total": st.total,
    }
    if st.total_sent:
        out["cpu_us_per_stream"] = 1e6 * cpu / st.total_sent
        out["cpu_us_per_chunk"] = 1e6 * cpu / (st.total_sent * chunks)
    return out


def bench_translate(t: Target, plan: Plan, fake: Proc, run_dir: Path) -> dict[str, Any]:
    """Passthrough (OpenAI -> OpenAI-type fake) against translation (OpenAI -> Anthropic-type
    fake), 2 KB requests, on one Qiao process: closed-loop CPU, added latency at a fixed rate,
    streaming CPU per chunk, RSS after many streams and with 1,000 translated streams open."""
    res: dict[str, Any] = {"name": t.name, "label": t.label, "url": t.url, "translate": {}}
    tr: dict[str, Any] = res["translate"]
    limit = plan.noise_limit
    msgs = driver.messages_2k(model=PASS)
    sides = {"passthrough": PASS, "translated": TRANS}
    proc: Proc | None = None
    try:
        proc = spawn(t.name, t.cmd, GATEWAY_CORE, run_dir / f"{t.name}.log", t.env)
        res["startup_median_s"] = wait_ready(proc, t.port, t.health, timeout=90)
        time.sleep(1.0)
        gw = proc.pid
        res["pid"] = gw
        res["rss_idle_mb"] = rss_mb(gw)
        tr["request_bytes"] = len(driver.body(PASS, messages=msgs))

        # (T1) closed loop, c=50, 2 KB body; passthrough and translated runs alternate
        bodies = {side: driver.body(m, messages=msgs) for side, m in sides.items()}
        for side, m in sides.items():
            run_wrk(t, plan.warmup_seconds, gw, fake.pid, model=m, body=bodies[side])
        wrk: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for _ in range(plan.wrk_runs):
            for side, m in sides.items():
                wrk[side] += wrk_runs(t, plan, gw, fake, 1, model=m, body=bodies[side])
        tr["wrk"] = {side: summarise_wrk(runs) | {"runs": runs} for side, runs in wrk.items()}

        # (T2) open loop: four series at the same rate in one window, a quarter interval apart:
        # the fake directly (OpenAI and Anthropic bodies), Qiao passthrough, Qiao translated
        fake_url = f"http://127.0.0.1:{fake.port}"
        slow = {side: f"{m}-d50" for side, m in sides.items()}
        series = [
            driver.Series(
                "direct_openai",
                fake_url + driver.PATH,
                driver.body(slow["passthrough"], messages=msgs),
                driver.headers(),
                0.0,
            ),
            driver.Series(
                "passthrough",
                t.url + driver.PATH,
                driver.body(slow["passthrough"], messages=msgs),
                driver.headers(t.key),
                0.25,
            ),
            driver.Series(
                "direct_anthropic",
                fake_url + "/v1/messages",
                driver.anthropic_body(slow["translated"], msgs),
                driver.anthropic_headers(),
                0.5,
            ),
            driver.Series(
                "translated",
                t.url + driver.PATH,
                driver.body(slow["translated"], messages=msgs),
                driver.headers(t.key),
                0.75,
            ),
        ]
        for attempt in range(2):
            meter = Meter(gw, fake.pid)
            ol = _uv(driver.open_loop_series(series, plan.open_rate, plan.open_seconds))
            tr["open_loop"] = o = {name: r.to_json() for name, r in ol.items()}
            o["noise"] = meter.stop()
            o["noisy"] = Meter.noisy(o["noise"], limit)
            log(
                f"{t.name}: open loop {plan.open_rate:g}/s each, p50/p99 ms: "
                + ", ".join(
                    f"{name} {o[name]['p50_ms']:.2f}/{o[name]['p99_ms']:.2f}" for name in ol
                )
                + f"; errors {sum(r.errors for r in ol.values())}"
                + (" NOISY" if o["noisy"] else "")
            )
            if not o["noisy"] or attempt == 1 or time.perf_counter() > DEADLINE[0]:
                break
            wait_quiet(fake.pid, limit, plan.quiet_wait)

        # (T3) streams one at a time, 20 chunks 1 ms apart; blocks alternate P, T, P, T, ...
        rounds = plan.stream_rounds
        seq: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for m in sides.values():  # warm the upstream pools, unmeasured
            _stream_block(t, gw, f"{m}-c1", 10, msgs, 1, 20)
        meter = Meter(gw, fake.pid)
        for _ in range(rounds):
            for side, m in sides.items():
                n = max(1, plan.streams // rounds)
                seq[side].append(_stream_block(t, gw, f"{m}-c1", n, msgs, 1, 20))
        tr["stream_seq_noise"] = meter.stop()
        tr["stream_seq"] = {side: _pool_blocks(blocks) for side, blocks in seq.items()}
        for side, v in tr["stream_seq"].items():
            log(
                f"{t.name}: {side} streams, one at a time: {v['cpu_us_per_stream']:.0f} µs/stream "
                f"(blocks {v['block_us_per_stream']}), {v['cpu_us_per_chunk']:.1f} µs/chunk, "
                f"ttft p50 {v['ttft']['p50_ms']:.2f} ms, errors {v['errors']}"
            )

        # (T4) 20 streams at a time, blocks alternating P, T: 20-chunk and 200-chunk streams
        # (the difference is the marginal cost of a chunk); RSS after each translated block
        many = max(20, plan.many_streams // rounds)
        rss: list[tuple[int, float]] = [(0, rss_mb(gw))]
        done_tr = 0
        loaded: dict[str, list[dict[str, Any]]] = {}
        meter = Meter(gw, fake.pid)
        for _ in range(rounds):
            for chunks, n in ((20, many), (200, max(20, many // 200 * 20))):
                for side in sides:
                    b = _stream_block(t, gw, f"{sides[side]}-c1-n{chunks}", n, msgs, 20, chunks)
                    b.pop("ttft"), b.pop("total")
                    loaded.setdefault(f"{side}_n{chunks}", []).append(b)
                    if side == "translated":
                        done_tr += b["streams"]
                        rss.append((done_tr, rss_mb(gw)))
        tr["stream_loaded_noise"] = meter.stop()
        tr["stream_loaded"] = {k: _pool_blocks(v) for k, v in loaded.items()}
        for k, v in tr["stream_loaded"].items():
            log(
                f"{t.name}: {k} x{v['streams']}, 20 at a time: "
                f"{v['cpu_us_per_chunk']:.1f} µs/chunk "
                f"(blocks, µs/stream: {v['block_us_per_stream']}), errors {v['errors']}"
            )
        for side in sides:
            a, b = tr["stream_loaded"][f"{side}_n20"], tr["stream_loaded"][f"{side}_n200"]
            tr.setdefault("marginal_us_per_chunk", {})[side] = (
                b["cpu_us_per_stream"] - a["cpu_us_per_stream"]
            ) / 180
        time.sleep(1.0)
        rss.append((done_tr, rss_mb(gw)))
        tr["rss_after_translated_streams"] = rss

        # (T5) 1,000 translated streams open at once
        ho = _uv(
            driver.hold_streams(
                t.url,
                f"{TRANS}-hold60",
                plan.hold_n,
                key=t.key,
                establish_s=plan.establish_seconds,
                hold_s=plan.hold_seconds,
                sample=lambda: rss_mb(gw),
                data=driver.body(f"{TRANS}-hold60", stream=True, messages=msgs),
            )
        )
        tr["hold"] = ho.to_json()
        if ho.samples:
            tr["hold"]["rss_peak_mb"] = max(ho.samples)
        time.sleep(2.0)
        tr["rss_after_hold_mb"] = rss_mb(gw)
        log(
            f"{t.name}: {ho.established}/{ho.requested} translated streams open, "
            f"peak RSS {tr['hold'].get('rss_peak_mb', math.nan):.0f} MB"
        )
    except (RuntimeError, subprocess.SubprocessError, OSError, KeyError) as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{t.name}: FAILED: {exc}")
    finally:
        if proc is not None:
            proc.stop()
            res["log_lines"] = trim_log(proc.log_path)
        if t.store_dir is not None:
            res["store"] = store_stats(t.store_dir)
            shutil.rmtree(t.store_dir, ignore_errors=True)
    return res


def _pool_blocks(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Blocks of one kind: the median block's CPU per stream (blocks alternate with the other
    side's, so a slow spell of the machine hits one block of each, not one side)."""
    streams = sum(b["streams"] for b in blocks)
    per_stream = [b["cpu_us_per_stream"] for b in blocks if "cpu_us_per_stream" in b]
    med = statistics.median(per_stream) if per_stream else math.nan
    chunks = blocks[0]["chunks"]
    out = {
        "streams": streams,
        "blocks": len(blocks),
        "cpu_s": round(sum(b["cpu_s"] for b in blocks), 4),
        "block_us_per_stream": [round(x) for x in per_stream],
        "cpu_us_per_stream": med,
        "cpu_us_per_chunk": med / chunks,
        "errors": sum(b["errors"] for b in blocks),
    }
    if "ttft" in blocks[0]:
        out["ttft"] = driver.summary_ms([x for b in blocks for x in b["ttft"]])
        out["total"] = driver.summary_ms([x for b in blocks for x in b["total"]])
    return out
