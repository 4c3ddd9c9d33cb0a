"""Soak: Qiao under a moderate fixed load for N minutes, RSS sampled every 10 s.

A mix of non-streaming (20 ms upstream) and streaming (20 chunks, 2 ms apart)
requests at a fixed rate (open loop), through one Qiao process pinned to core 0
with auth and the access log on; the fake and this driver on core 1. Prints the
RSS series and first / last / max, and writes bench/results/soak-<time>.json.

    python bench/soak.py                 # 10 minutes at 200 req/s, 30 % streams
    python bench/soak.py --minutes 2 --rate 100
    python bench/soak.py --qiao-rev HEAD # a committed revision instead of the work tree
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import sys
import time
from typing import Any

import aiohttp
import driver
import run
from procfs import GATEWAY_CORE, RIG_CORE, cpu_seconds, rss_mb
from procs import BENCH, REPO, RESULTS, free_port, spawn, trim_log, wait_ready
from targets import make_targets

MAX_MINUTES = 60
MAX_IN_FLIGHT = 2000


async def soak(
    url: str, pid: int, rate: float, seconds: float, stream_share: float, every: float
) -> dict[str, Any]:
    target = url.rstrip("/") + driver.PATH
    hdrs = driver.headers()
    plain = driver.body("bench-d20")
    streamed = driver.body("bench-c2", stream=True)
    stats = {"ok": 0, "errors": 0, "dropped": 0, "in_flight": 0}
    series: list[dict[str, Any]] = []
    first_error = ""

    async def one(stream: bool) -> None:
        nonlocal first_error
        stats["in_flight"] += 1
        try:
            async with asyncio.timeout(15):
                async with session.post(
                    target, data=streamed if stream else plain, headers=hdrs
                ) as r:
                    if stream:
                        async for _ in r.content.iter_any():
                            pass
                    else:
                        await r.read()
                    ok = r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok = False
            first_error = first_error or type(exc).__name__
        finally:
            stats["in_flight"] -= 1
        stats["ok" if ok else "errors"] += 1

    async def sampler(t0: float) -> None:
        while True:
            cpu = cpu_seconds(pid)
            point = {"t_s": round(time.perf_counter() - t0, 1), "rss_mb": round(rss_mb(pid), 1),
                     "cpu_s": round(cpu, 2), **stats}  # fmt: skip
            series.append(point)
            print(
                f"  t={point['t_s']:6.1f}s  rss={point['rss_mb']:6.1f} MB  cpu={cpu:7.2f}s  "
                f"ok={stats['ok']}  errors={stats['errors']}  in_flight={stats['in_flight']}",
                flush=True,
            )
            await asyncio.sleep(every)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        sampling = asyncio.ensure_future(sampler(t0))
        tasks: set[asyncio.Task[None]] = set()
        n = int(rate * seconds)
        every_stream = max(1, round(1 / stream_share)) if stream_share > 0 else 0
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if stats["in_flight"] >= MAX_IN_FLIGHT:
                stats["dropped"] += 1
                continue
            task = asyncio.ensure_future(one(every_stream > 0 and i % every_stream == 0))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=20)
        await asyncio.sleep(min(every, 2.0))
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling
        final = {"t_s": round(time.perf_counter() - t0, 1), "rss_mb": round(rss_mb(pid), 1),
                 "cpu_s": round(cpu_seconds(pid), 2), **stats}  # fmt: skip
        series.append(final)
    rss = [p["rss_mb"] for p in series]
    return {
        "series": series,
        "rss_first_mb": rss[0],
        "rss_after_1min_mb": next((p["rss_mb"] for p in series if p["t_s"] >= 60), None),
        "rss_last_mb": rss[-1],
        "rss_max_mb": max(rss),
        "requests_ok": stats["ok"],
        "errors": stats["errors"],
        "dropped": stats["dropped"],
        "first_error": first_error,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=200.0, help="requests per second, all kinds")
    p.add_argument("--stream-share", type=float, default=0.3, help="share of streamed requests")
    p.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    p.add_argument("--qiao-rev", help="benchmark this committed revision of qiao/ (git archive)")
    args = p.parse_args()
    minutes = min(args.minutes, MAX_MINUTES)
    rate = min(args.rate, 2000.0)
    os.sched_setaffinity(0, {int(RIG_CORE)})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / f"soak-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    fake_port = free_port()
    fake = spawn(
        "fake",
        [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(fake_port),
         "--exit-after", str(60 * minutes + 300)],
        RIG_CORE,
        run_dir / "fake.log",
        dict(os.environ),
    )  # fmt: skip
    ns = argparse.Namespace(
        targets="qiao", qiao_rev=args.qiao_rev, no_install=True, quick=False, max_minutes=None
    )
    qiao = None
    try:
        wait_ready(fake, fake_port, "/health", timeout=15)
        (target,) = make_targets(ns, fake_port, run_dir)
        qiao = spawn("qiao", target.cmd, GATEWAY_CORE, run_dir / "qiao.log", target.env)
        startup = wait_ready(qiao, target.port, target.health, timeout=60)
        print(
            f"soak: Qiao ready in {startup:.2f} s; {rate:g} req/s for {minutes:g} min, "
            f"{args.stream_share:.0%} streamed; RSS every {args.every:g} s",
            flush=True,
        )
        result = driver._run(
            soak(target.url, qiao.pid, rate, 60 * minutes, args.stream_share, args.every)
        )
    finally:
        if qiao is not None:
            qiao.stop()
            trim_log(qiao.log_path)
        fake.stop()
    result |= {
        "started": stamp,
        "minutes": minutes,
        "rate": rate,
        "stream_share": args.stream_share,
        "qiao_source": run._qiao_source(getattr(ns, "qiao_rev_sha", None)),
    }
    out = RESULTS / f"soak-{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    growth = result["rss_last_mb"] - (result["rss_after_1min_mb"] or result["rss_first_mb"])
    print(
        f"\nRSS first {result['rss_first_mb']:.1f} MB, after 1 min "
        f"{result['rss_after_1min_mb'] or float('nan'):.1f} MB, last {result['rss_last_mb']:.1f} "
        f"MB, max {result['rss_max_mb']:.1f} MB; growth after the first minute {growth:+.1f} MB"
    )
    print(
        f"requests ok {result['requests_ok']}, errors {result['errors']}, "
        f"dropped {result['dropped']}\nraw: {out.relative_to(REPO)}"
    )
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
