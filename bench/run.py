"""Qiao's benchmark: one command, every target side by side, bounded in time.

    python bench/run.py            # every target, ~14 min on a quiet machine, bounded
    python bench/run.py --quick    # ~5 min, fewer and shorter runs
    python bench/run.py --qiao-rev HEAD   # a committed revision of qiao/, not the work tree

Layout on the 2-core machine: each gateway is one process pinned to core 0;
the fake upstream, wrk, and this script (with its Python drivers) share core 1.
Targets, one after another against the same fake:

* ``direct``    - the rig talks to the fake; the reference for "added" figures
* ``baseline``  - bench/baseline_aiohttp.py, the aiohttp+uvloop floor
* ``qiao``      - ``qiao serve`` with a virtual key and its access log on (to a file),
                  keys and usage in an SQLite store in a temp dir (the default setup)
* ``qiao+limits`` - the same, but the key has rpm/tpm/concurrency limits and a token
                  budget that never trips: every request runs the limiter and the budget
                  reservation and settlement
* ``qiao-mem``  - the same as ``qiao`` with ``storage.url: memory://`` (closed loop only):
                  what the SQLite usage writes cost
* ``qiao-rev``  - ``--compare-rev REV`` (e.g. the commit before storage), closed loop only
* ``translate`` - one Qiao with an OpenAI-type and an Anthropic-type provider on the same
                  fake: OpenAI-SDK requests (2 KB) passed through vs translated to Anthropic's
                  Messages API and back, non-streaming and streaming
* ``starlette`` - bench/baseline_starlette.py (starlette+uvicorn+httpx), optional
* ``litellm``   - LiteLLM's proxy, one worker, from bench/.litellm-venv

Scenarios per target: start-up (median of 3, process spawn -> first 200 on its
health URL), idle RSS, wrk closed loop at concurrency 50 (median of 3 x 10 s,
gateway CPU from /proc), open loop at 50 req/s against a 50 ms upstream,
streaming (20 chunks, time to first token), RSS with 1,000 open streams. The
open-loop and streaming phases measure the fake directly in the same window, as
the reference for "added" figures. Phases during which other processes took more
than --noise-limit % of a core are re-done (the machine is shared).

Raw results go to bench/results/<timestamp>.json; a Markdown table is printed.
Everything stays on 127.0.0.1 and every phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import driver
from procfs import (
    DEADLINE,
    GATEWAY_CORE,
    RIG_CORE,
    Meter,
    cpu_seconds,
    log,
    rss_mb,
    wait_quiet,
)
from procs import (
    BENCH,
    LITELLM_VENV,
    REPO,
    RESULTS,
    Proc,
    free_port,
    spawn,
    trim_log,
    wait_ready,
)
from report import markdown, targets_check, translate_markdown
from targets import (
    HOLD_MODEL,
    SLOW_MODEL,
    STREAM_MODEL,
    Target,
    make_targets,
    store_stats,
)
from translate import bench_translate
from wrk import FULL, QUICK, Plan, _uv, run_wrk, summarise_wrk, wrk_runs


def bench_target(t: Target, plan: Plan, fake: Proc, run_dir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"name": t.name, "label": t.label, "url": t.url}
    if t.skip:
        res["skipped"] = t.skip
        log(f"{t.name}: skipped ({t.skip})")
        return res
    proc: Proc | None = None
    try:
        if t.gateway:
            startups = []
            for i in range(plan.startup_runs):
                proc = spawn(t.name, t.cmd, GATEWAY_CORE, run_dir / f"{t.name}.log", t.env)
                startups.append(wait_ready(proc, t.port, t.health, timeout=90))
                if i < plan.startup_runs - 1:
                    proc.stop()
                    time.sleep(0.5)
            res["startup_s"] = [round(s, 3) for s in startups]
            res["startup_median_s"] = statistics.median(startups)
            log(f"{t.name}: ready in {res['startup_median_s']:.2f} s (median of {len(startups)})")
            time.sleep(1.0)
            assert proc is not None
            res["pid"] = proc.pid
            res["rss_idle_mb"] = rss_mb(proc.pid)
        gw_pid = proc.pid if proc else None

        # (1) closed loop, concurrency 50; runs disturbed by other load are re-done
        run_wrk(t, plan.warmup_seconds, gw_pid, fake.pid)
        runs = wrk_runs(t, plan, gw_pid, fake, plan.wrk_runs)
        res["wrk_runs"] = runs
        res["wrk"] = summarise_wrk(runs)
        for label, key in t.extra_keys.items():
            extra = wrk_runs(t, plan, gw_pid, fake, plan.wrk_runs, key=key)
            res.setdefault("wrk_extra", {})[label] = summarise_wrk(extra) | {"runs": extra}
        if "open" not in t.phases:
            return res
        limit = plan.noise_limit

        # (2) open loop, fixed rate, 50 ms upstream; the fake itself measured alongside
        ref = f"http://127.0.0.1:{fake.port}" if t.gateway else None
        for attempt in range(2):
            meter = Meter(gw_pid, fake.pid)
            gw0 = cpu_seconds(gw_pid) if gw_pid else 0.0
            ol = _uv(
                driver.open_loop(
                    t.url, SLOW_MODEL, plan.open_rate, plan.open_seconds, ref_url=ref, key=t.key
                )
            )
            res["open_loop"] = o = ol.to_json()
            if gw_pid and ol.total_sent:
                o["cpu_us_per_req"] = 1e6 * (cpu_seconds(gw_pid) - gw0) / ol.total_sent
            o["noise"] = meter.stop()
            o["noisy"] = Meter.noisy(o["noise"], limit)
            log(
                f"{t.name}: open loop {plan.open_rate:g}/s p50 {o['p50_ms']:.2f} ms "
                f"p99 {o['p99_ms']:.2f} ms errors {ol.errors}"
                + (
                    f" (direct alongside: {o['ref']['p50_ms']:.2f} / {o['ref']['p99_ms']:.2f})"
                    if ref
                    else ""
                )
                + (" NOISY" if o["noisy"] else "")
            )
            if not o["noisy"] or attempt == 1 or time.perf_counter() > DEADLINE[0]:
                break
            wait_quiet(fake.pid, limit, plan.quiet_wait)

        # (3) streaming, 20 chunks, one at a time, alternating with the fake itself
        for attempt in range(2):
            meter = Meter(gw_pid, fake.pid)
            gw0 = cpu_seconds(gw_pid) if gw_pid else 0.0
            st = _uv(driver.stream_ttft(t.url, STREAM_MODEL, plan.streams, ref_url=ref, key=t.key))
            res["stream"] = sj = st.to_json()
            if gw_pid and st.total_sent:
                sj["cpu_us_per_stream"] = 1e6 * (cpu_seconds(gw_pid) - gw0) / st.total_sent
            sj["noise"] = meter.stop()
            sj["noisy"] = Meter.noisy(sj["noise"], limit)
            log(
                f"{t.name}: stream ttft p50 {sj['ttft']['p50_ms']:.2f} ms "
                f"p99 {sj['ttft']['p99_ms']:.2f} ms errors {st.errors}"
                + (
                    f" (direct alongside: {sj['ref']['ttft']['p50_ms']:.2f} / "
                    f"{sj['ref']['ttft']['p99_ms']:.2f})"
                    if ref and "ref" in sj
                    else ""
                )
                + (" NOISY" if sj["noisy"] else "")
            )
            if not sj["noisy"] or attempt == 1 or time.perf_counter() > DEADLINE[0]:
                break
            wait_quiet(fake.pid, limit, plan.quiet_wait)

        # (4) RSS: idle after load, then 1,000 open streams
        if gw_pid:
            time.sleep(2.0)
            res["rss_after_load_mb"] = rss_mb(gw_pid)
        sample: Callable[[], float] | None = (lambda: rss_mb(gw_pid)) if gw_pid else None
        ho = _uv(
            driver.hold_streams(
                t.url,
                HOLD_MODEL,
                plan.hold_n,
                key=t.key,
                establish_s=plan.establish_seconds,
                hold_s=plan.hold_seconds,
                sample=sample,
            )
        )
        res["hold"] = ho.to_json()
        if ho.samples:
            res["hold"]["rss_peak_mb"] = max(ho.samples)
        if gw_pid:
            time.sleep(2.0)
            res["rss_after_streams_mb"] = rss_mb(gw_pid)
        log(
            f"{t.name}: {ho.established}/{ho.requested} streams open in {ho.ramp_s:.1f} s, "
            f"peak RSS {res['hold'].get('rss_peak_mb', math.nan):.0f} MB"
        )
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        res["error"] = str(exc)
        log(f"{t.name}: FAILED: {exc}")
    finally:
        if proc is not None:
            proc.stop()
            res["log_lines"] = trim_log(proc.log_path)
        if t.store_dir is not None:
            res["store"] = store_stats(t.store_dir)
            shutil.rmtree(t.store_dir, ignore_errors=True)
    return res


# --------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~3 min: 1 x 5 s wrk, shorter phases")
    p.add_argument(
        "--targets",
        default="direct,baseline,qiao,qiao+limits,qiao-mem,translate,starlette,litellm",
        help="comma-separated subset of direct,baseline,qiao,qiao+limits,qiao-mem,"
        "qiao-rev,translate,starlette,litellm (qiao-rev needs --compare-rev)",
    )
    p.add_argument("--no-install", action="store_true", help="never create the venvs")
    p.add_argument(
        "--noise-limit",
        type=float,
        default=15.0,
        help="%% of a core used by other processes above which a phase is re-done (default 15)",
    )
    p.add_argument(
        "--qiao-rev",
        help="benchmark this committed revision of qiao/ (git archive), not the work tree",
    )
    p.add_argument(
        "--compare-rev",
        help="also measure this revision of qiao/ (target qiao-rev, closed loop only), "
        "e.g. the commit before the store and accounting",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="skip targets not started by then (default 20, quick 8)",
    )
    args = p.parse_args()
    plan = dataclasses.replace(QUICK if args.quick else FULL, noise_limit=args.noise_limit)
    budget = 60 * (args.max_minutes or (8 if args.quick else 20))
    if not shutil.which("wrk") or not shutil.which("taskset"):
        p.error("needs wrk and taskset (apt-get install -y wrk util-linux)")
    if (os.cpu_count() or 1) < 2:
        p.error("needs two cores: the gateway on core 0, the rig on core 1")
    os.sched_setaffinity(0, {int(RIG_CORE)})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    fake_port = free_port()
    env = dict(os.environ)
    fake = spawn(
        "fake",
        [
            sys.executable,
            str(BENCH / "fake_upstream.py"),
            "--port",
            str(fake_port),
            "--exit-after",
            "1800",
        ],
        RIG_CORE,
        run_dir / "fake.log",
        env,
    )
    report: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "plan": plan.__dict__,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "layout": {"gateway_core": GATEWAY_CORE, "rig_core": RIG_CORE},
        "targets": [],
    }
    t_start = time.perf_counter()
    try:
        fake.port = fake_port
        wait_ready(fake, fake_port, "/health", timeout=15)
        targets = make_targets(args, fake_port, run_dir)
        t_start = time.perf_counter()  # venv installs do not count against the budget
        DEADLINE[0] = t_start + budget
        for t in targets:
            if time.perf_counter() - t_start > budget:
                report["targets"].append(
                    {"name": t.name, "label": t.label, "skipped": "time budget exhausted"}
                )
                continue
            log(f"--- {t.label} ---")
            waited = wait_quiet(fake.pid, plan.noise_limit, plan.quiet_wait)
            if waited > 1.5:
                log(f"waited {waited:.0f} s for other load to stop")
            bench = bench_translate if t.name == "translate" else bench_target
            report["targets"].append(bench(t, plan, fake, run_dir))
            time.sleep(1.0)
    finally:
        fake.stop()
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["versions"] = _versions()
    report["versions"]["qiao_source"] = _qiao_source(getattr(args, "qiao_rev_sha", None))
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    table = "\n\n".join(x for x in (markdown(report), translate_markdown(report)) if x)
    check = targets_check(report)
    (run_dir / "table.md").write_text(table + "\n\n" + check + "\n")
    print(f"\n## Results {report['started']} ({report['mode']}, {report['wall_s']:.0f} s)\n")
    print(table)
    print()
    print(check)
    print(f"\nraw: {out.relative_to(REPO)}")
    return 0


def _qiao_source(rev: str | None) -> str:
    def git(*a: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        return out.stdout.strip()

    if rev:
        return f"git archive {rev}"
    dirty = git("status", "--porcelain", "--", "qiao")
    return f"work tree at {git('rev-parse', '--short', 'HEAD')}" + (" + edits" if dirty else "")


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name, py in (("qiao", sys.executable), ("litellm", str(LITELLM_VENV / "bin" / "python"))):
        if not Path(py).exists():
            continue
        mod = "qiao" if name == "qiao" else "importlib.metadata"
        code = (
            "import qiao; print(qiao.__version__)"
            if mod == "qiao"
            else "import importlib.metadata as m; print(m.version('litellm'))"
        )
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            out[name] = subprocess.run(
                [py, "-c", code], capture_output=True, text=True, timeout=60
            ).stdout.strip()
    import aiohttp

    out["aiohttp"] = aiohttp.__version__
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        out["wrk"] = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, timeout=10
        ).stdout.split("\n")[0]
    return out


if __name__ == "__main__":
    sys.exit(main())
