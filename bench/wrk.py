"""Qiao benchmark: closed-loop wrk runs, their parsing and medians, and the run plans
(split from run.py)."""

from __future__ import annotations

import asyncio
import math
import os
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from procfs import (
    DEADLINE,
    RIG_CORE,
    Meter,
    children_cpu,
    cpu_seconds,
    log,
    wait_quiet,
)
from procs import BENCH, Proc
from targets import MODEL, Target

# --------------------------------------------------------------------- phases

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else math.nan


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in ([\d.]+)(\w+)", out):
        res["requests"] = int(m.group(1))
    for pct in ("50", "75", "90", "99"):
        if m := re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M):
            res[f"p{pct}_ms"] = _ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


def run_wrk(
    t: Target,
    seconds: float,
    gw_pid: int | None,
    fake_pid: int,
    connections: int = 50,
    *,
    key: str | None = None,
    model: str = MODEL,
    body: bytes | None = None,
) -> dict[str, Any]:
    env = {**os.environ, "BENCH_KEY": key or t.key, "BENCH_MODEL": model}
    if body is not None:
        env["BENCH_BODY"] = body.decode()
    cmd = [
        "taskset",
        "-c",
        RIG_CORE,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(BENCH / "wrk_post.lua"),
        t.url,
    ]
    gw0 = cpu_seconds(gw_pid) if gw_pid else 0.0
    fk0, wr0, t0 = cpu_seconds(fake_pid), children_cpu(), time.perf_counter()
    meter = Meter(gw_pid, fake_pid)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    wall = time.perf_counter() - t0
    noise = meter.stop()
    res = parse_wrk(out.stdout)
    n = res.get("requests", 0) - res.get("non2xx", 0)
    fake_cpu = cpu_seconds(fake_pid) - fk0
    wrk_cpu = children_cpu() - wr0
    res |= {
        "wall_s": round(wall, 2),
        "fake_cpu_s": round(fake_cpu, 2),
        "wrk_cpu_s": round(wrk_cpu, 2),
    }
    res["rig_core_busy_pct"] = round(100 * (fake_cpu + wrk_cpu) / seconds, 1)
    if gw_pid:
        gw = cpu_seconds(gw_pid) - gw0
        res["gw_cpu_s"] = round(gw, 2)
        res["gw_core_busy_pct"] = round(100 * gw / seconds, 1)
        res["rps_per_core"] = n / gw if gw > 0 else math.nan
        res["cpu_us_per_req"] = 1e6 * gw / n if n else math.nan
    res["fake_cpu_us_per_req"] = 1e6 * fake_cpu / n if n else math.nan
    res["noise"] = noise
    res["foreign_pct"] = max(noise["core0_foreign_pct"], noise["core1_foreign_pct"])
    if out.returncode != 0:
        res["error"] = out.stderr.strip()[-500:]
    return res


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in runs if isinstance(r.get(key), int | float) and not math.isnan(r[key])]
    return statistics.median(vals) if vals else math.nan


def _uv(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


@dataclass
class Plan:
    startup_runs: int
    wrk_runs: int
    wrk_seconds: float
    warmup_seconds: float
    open_rate: float
    open_seconds: float
    streams: int
    hold_n: int
    hold_seconds: float
    establish_seconds: float
    many_streams: int = 1000  # translation: 20-chunk streams per side, 20 at a time
    stream_rounds: int = 4  # translation: alternating blocks per side
    noise_limit: float = 15.0  # % foreign CPU on a core above which a phase is re-done
    quiet_wait: float = 120.0  # s to wait for the machine to quieten before a redo


FULL = Plan(3, 3, 10, 2, 50, 20, 200, 1000, 3, 30, 2000, 4)
QUICK = Plan(1, 1, 5, 1, 50, 8, 100, 1000, 2, 20, 600, 3)


def wrk_runs(
    t: Target, plan: Plan, gw_pid: int | None, fake: Proc, n: int, **kw: Any
) -> list[dict[str, Any]]:
    """``n`` clean wrk runs (a run with other load above the limit is re-done, up to ``2n``
    runs in all; past the deadline the noisy ones are kept, flagged)."""
    limit = plan.noise_limit
    runs: list[dict[str, Any]] = []
    clean = 0
    while clean < n and len(runs) < 2 * n:
        if len(runs) >= n and time.perf_counter() > DEADLINE[0]:
            break  # out of time: keep the noisy runs, flagged as such
        r = run_wrk(t, plan.wrk_seconds, gw_pid, fake.pid, **kw)
        r["noisy"] = r["foreign_pct"] > limit
        runs.append(r)
        clean += not r["noisy"]
        what = kw.get("model") or (f"key {kw['key'][:16]}…" if "key" in kw else "")
        log(
            f"{t.name}{' ' + what if what else ''}: wrk {r.get('rps', 0):.0f} rps, "
            f"p50 {r.get('p50_ms', 0):.2f} ms, p99 {r.get('p99_ms', 0):.2f} ms, "
            f"gw cpu {r.get('gw_core_busy_pct', '-')}%, {r.get('cpu_us_per_req', 0):.0f} µs/req, "
            f"rig {r['rig_core_busy_pct']}%, foreign {r['foreign_pct']}%, "
            f"non2xx {r['non2xx']}" + (" NOISY, redo" if r["noisy"] else "")
        )
        if r["noisy"]:
            wait_quiet(fake.pid, limit, plan.quiet_wait)
    return runs


def summarise_wrk(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the clean runs (over all of them if none was clean)."""
    clean = [r for r in runs if not r.get("noisy")]
    use = clean or runs
    keys = (
        "rps",
        "p50_ms",
        "p99_ms",
        "rps_per_core",
        "cpu_us_per_req",
        "fake_cpu_us_per_req",
        "rig_core_busy_pct",
        "gw_core_busy_pct",
        "foreign_pct",
    )
    out: dict[str, Any] = {k: median_of(use, k) for k in keys}
    out["errors"] = sum(r.get("non2xx", 0) + r.get("socket_errors", 0) for r in runs)
    out["runs_used"] = len(use)
    out["noisy_runs"] = len(runs) - len(clean)
    return out
