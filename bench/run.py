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
import asyncio
import contextlib
import dataclasses
import datetime as dt
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import driver
from procfs import (
    DEADLINE,
    GATEWAY_CORE,
    RIG_CORE,
    Meter,
    children_cpu,
    cpu_exact,
    cpu_seconds,
    log,
    rss_mb,
    wait_quiet,
)
from report import markdown, targets_check, translate_markdown

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
LITELLM_VENV = BENCH / ".litellm-venv"
ALT_VENV = BENCH / ".alt-venv"
CLIENT_KEY = "sk-bench-client-key-123"
UPSTREAM_KEY = "sk-bench-upstream-key"
MODEL = "gpt-4o-mini"
SLOW_MODEL = "bench-d50"  # the fake answers after 50 ms
STREAM_MODEL = "bench-c1"  # 20 chunks, 1 ms apart
HOLD_MODEL = "bench-hold60"  # first chunk, then held open (we close it first)
# translation scenarios: "pt-…" routes to the OpenAI-type provider, "tr-…" to the Anthropic one
PASS, TRANS = "pt-bench", "tr-bench"
# The budget of qiao+limits, in tokens: never reached in a run (~40 tokens a request). The SQLite
# store keeps amounts as 64-bit integers of 1e-9 units, so at most ~9.2e9: a larger budget
# (1e12, say) is accepted by the config but every request then fails with a 500.
BUDGET_TOKENS = "1000000000"
ALL_PHASES = frozenset({"wrk", "open", "stream", "hold"})


# --------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float
    port: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def spawn(name: str, cmd: list[str], core: str, log_path: Path, env: dict[str, str]) -> Proc:
    logf = open(log_path, "ab")  # handed to the child
    started = time.perf_counter()
    popen = subprocess.Popen(
        ["taskset", "-c", core, *cmd],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
        cwd=REPO,
    )
    logf.close()
    return Proc(name, popen, log_path, started)


def wait_ready(proc: Proc, port: int, path: str, timeout: float) -> float:
    """Seconds from spawn to the first 200 on ``path``; raises on timeout or exit."""
    deadline = proc.started + timeout
    while time.perf_counter() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}"
            )
        if http_get_status(port, path, timeout=0.5) == 200:
            return time.perf_counter() - proc.started
        time.sleep(0.01)
    raise RuntimeError(f"{proc.name} not ready within {timeout:g} s; see {proc.log_path}")


def trim_log(path: Path, keep: int = 64 * 1024) -> int:
    """Keep the head and tail of a large log; return its line count."""
    try:
        size = path.stat().st_size
    except OSError:
        return 0
    with open(path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    if size > 4 * keep:
        with open(path, "rb") as f:
            head = f.read(keep)
            f.seek(size - keep)
            tail = f.read()
        path.write_bytes(head + b"\n[... trimmed by bench/run.py ...]\n" + tail)
    return lines


# --------------------------------------------------------------------- venvs


def ensure_venv(venv: Path, packages: list[str], probe: str, timeout: float = 900) -> str | None:
    """Create ``venv`` and install ``packages`` unless ``probe`` exists; None or why not."""
    if (venv / "bin" / probe).exists():
        return None
    log(f"installing {' '.join(packages)} into {venv.relative_to(REPO)} (once)")
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *packages],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        return f"install failed: {exc}"
    return None if (venv / "bin" / probe).exists() else f"{probe} missing after install"


# --------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    label: str
    port: int
    health: str = "/health"
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    key: str = CLIENT_KEY
    skip: str | None = None
    phases: frozenset[str] = ALL_PHASES
    store_dir: Path | None = None  # a temp dir with the SQLite store and journal; removed after
    extra_keys: dict[str, str] = field(default_factory=dict)  # label -> key: more wrk phases

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> bool:
        return bool(self.cmd)


def qiao_config(
    port: int,
    fake_port: int,
    store: Path | None,
    *,
    key_options: str = "",
    extra_keys: str = "",
    translate: bool = False,
    memory: bool = False,
) -> str:
    """``store``: the temp dir of the SQLite store and usage journal (None: no storage
    section, for a revision before the store existed); ``memory``: ``memory://`` there."""
    anth = (
        f"""  anth:
    type: anthropic
    base_url: "http://127.0.0.1:{fake_port}"  # no /v1: Qiao appends /v1/messages
    api_key: "{UPSTREAM_KEY}"
    max_connections: 1100
"""
        if translate
        else ""
    )
    models = f"""  {MODEL}: [{{provider: fake}}]
  "bench*": [{{provider: fake}}]
"""
    if translate:
        models += f"""  "{PASS}*": [{{provider: fake}}]
  "{TRANS}*": [{{provider: anth}}]
"""
    storage = ""
    if store is not None:
        url = "memory://" if memory else f"sqlite:///{store / 'bench.db'}"
        storage = f"""storage:
  url: "{url}"
  journal_dir: "{store / "journal"}"
"""
    return f"""# generated by bench/run.py
listen: 127.0.0.1:{port}
providers:
  fake:
    type: openai
    base_url: "http://127.0.0.1:{fake_port}/v1"
    api_key: "{UPSTREAM_KEY}"
    max_connections: 1100  # default 256; the open-streams test holds 1,000
{anth}models:
{models}keys:
  - {{name: bench, key: "{CLIENT_KEY}", models: ["*"]{key_options}}}
{extra_keys}server: {{access_log: true}}
{storage}"""


LIMITS = "limits: {rpm: 100000000, tpm: 100000000000, concurrency: 10000}"
BUDGET = f'budget: {{amount: "{BUDGET_TOKENS}", currency: tokens, period: month}}'
LIMITS_ONLY_KEY = "sk-bench-limits-only-key-456"


def litellm_config(fake_port: int) -> str:
    base = f"http://127.0.0.1:{fake_port}/v1"
    return f"""# generated by bench/run.py
model_list:
  - model_name: {MODEL}
    litellm_params: {{model: openai/{MODEL}, api_base: "{base}", api_key: "{UPSTREAM_KEY}"}}
  - model_name: "bench*"
    litellm_params: {{model: "openai/bench*", api_base: "{base}", api_key: "{UPSTREAM_KEY}"}}
general_settings:
  master_key: {CLIENT_KEY}
litellm_settings:
  telemetry: false
"""


def make_targets(args: argparse.Namespace, fake_port: int, run_dir: Path) -> list[Target]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "QIAO_"))}
    py = sys.executable
    wanted = set(args.targets.split(","))
    targets: list[Target] = []
    upstream = f"http://127.0.0.1:{fake_port}/v1"
    if "direct" in wanted:
        targets.append(Target("direct", "direct → fake", fake_port))
    if "baseline" in wanted:
        p = free_port()
        cmd = [py, str(BENCH / "baseline_aiohttp.py"), "--port", str(p), "--upstream", upstream]
        targets.append(Target("baseline", "aiohttp baseline", p, cmd=cmd, env=env))
    qiao_variants = [
        n for n in ("qiao", "qiao+limits", "qiao-mem", "translate", "qiao-rev") if n in wanted
    ]
    if qiao_variants:
        qenv = dict(env)
        if args.qiao_rev:  # a committed revision, exported: the work tree may be mid-edit
            args.qiao_rev_sha, src = export_rev(args.qiao_rev, run_dir / "qiao-src")
            qenv["PYTHONPATH"] = str(src)
        # the console script: unlike `python -m`, it does not put the cwd first on sys.path
        qiao_bin = Path(py).parent / "qiao"
        qcmd = [str(qiao_bin)] if qiao_bin.exists() else [py, "-m", "qiao"]
    for name in qiao_variants:
        p = free_port()
        cfg = run_dir / f"{name.replace('+', '-')}.yaml"
        tenv, store, kw, phases = qenv, None, {}, ALL_PHASES
        extra: dict[str, str] = {}
        label = {
            "qiao": "Qiao",
            "qiao+limits": "Qiao + limits/budget",
            "qiao-mem": "Qiao, memory store",
            "translate": "Qiao translation",
        }.get(name, "")
        if name == "qiao-rev":
            if not args.compare_rev:
                continue
            sha, src = export_rev(args.compare_rev, run_dir / "compare-src")
            tenv = {**qenv, "PYTHONPATH": str(src)}
            label = f"Qiao at {sha}"
            phases = frozenset({"wrk"})
        else:
            store = Path(tempfile.mkdtemp(prefix=f"qiao-bench-{name.replace('+', '-')}-"))
        if name == "qiao+limits":
            kw["key_options"] = f", {LIMITS}, {BUDGET}"
            kw["extra_keys"] = (
                f'  - {{name: limits-only, key: "{LIMITS_ONLY_KEY}", models: ["*"], {LIMITS}}}\n'
            )
            extra["limits only, no budget"] = LIMITS_ONLY_KEY
        elif name == "qiao-mem":
            kw["memory"] = True
            phases = frozenset({"wrk"})
        elif name == "translate":
            kw["translate"] = True
        cfg.write_text(qiao_config(p, fake_port, store, **kw))
        cmd = [*qcmd, "serve", "--config", str(cfg)]
        targets.append(
            Target(
                name,
                label,
                p,
                health="/healthz",
                cmd=cmd,
                env=tenv,
                phases=phases,
                store_dir=store,
                extra_keys=extra,
            )
        )
    if "starlette" in wanted:
        p = free_port()
        why = (
            None
            if args.no_install
            else ensure_venv(ALT_VENV, ["starlette", "uvicorn[standard]", "httpx"], "uvicorn")
        )
        if not (ALT_VENV / "bin" / "uvicorn").exists():
            why = why or "bench/.alt-venv missing (run without --no-install)"
        cmd = [
            str(ALT_VENV / "bin" / "python"),
            str(BENCH / "baseline_starlette.py"),
            "--port",
            str(p),
            "--upstream",
            upstream,
        ]
        targets.append(Target("starlette", "starlette baseline", p, cmd=cmd, env=env, skip=why))
    if "litellm" in wanted:
        p = free_port()
        why = None if args.no_install else ensure_venv(LITELLM_VENV, ["litellm[proxy]"], "litellm")
        if not (LITELLM_VENV / "bin" / "litellm").exists():
            why = why or "bench/.litellm-venv missing (run without --no-install)"
        cfg = run_dir / "litellm.yaml"
        cfg.write_text(litellm_config(fake_port))
        cmd = [
            str(LITELLM_VENV / "bin" / "litellm"),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(p),
            "--num_workers",
            "1",
        ]
        lenv = {**env, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
        targets.append(
            Target(
                "litellm",
                "LiteLLM proxy",
                p,
                health="/health/liveliness",
                cmd=cmd,
                env=lenv,
                skip=why,
            )
        )
    order = [
        "direct",
        "baseline",
        "qiao",
        "qiao+limits",
        "qiao-mem",
        "qiao-rev",
        "translate",
        "starlette",
        "litellm",
    ]
    return sorted(targets, key=lambda t: order.index(t.name))


def export_rev(rev: str, dest: Path) -> tuple[str, Path]:
    """``git archive`` of qiao/ at ``rev`` into ``dest``: (short sha, dest)."""
    dest.mkdir(parents=True, exist_ok=True)
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", sha, "qiao"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return sha, dest


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


def store_stats(store: Path | None) -> dict[str, Any]:
    """Size of the SQLite store and journal, and the usage rows written (accounting ran)."""
    if store is None:
        return {}
    out: dict[str, Any] = {}
    db = store / "bench.db"
    sizes = [f.stat().st_size for f in store.rglob("*") if f.is_file()]
    out["dir_mb"] = round(sum(sizes) / 2**20, 1)
    if db.exists():
        with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db)) as c:
            out["usage_rows"] = c.execute("SELECT count(*) FROM usage").fetchone()[0]
            out["spend_rows"] = c.execute("SELECT count(*) FROM spend").fetchone()[0]
    return out


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
