"""What auth, limits, budgets and usage accounting cost per request, two ways.

    python bench/hotpath.py inproc              # the calls themselves, in one process
    python bench/hotpath.py instructions        # the same, counted by callgrind (repeatable)
    python bench/hotpath.py ab --rev OLD=fe0ae9e  # whole gateways, interleaved rounds

``inproc`` runs the per-request calls of the hot path — key lookup, the limiter, the budget
reservation and settlement, the usage rows (pending, then settled) — against an Engine on a
SQLite store, with nothing else: no HTTP, no upstream. CPU is the process's (every thread:
the SQLite writer included), and the usage writer is drained inside the timed window, so the
database inserts are counted. Three keys: ``plain`` (auth + accounting), ``limits`` (+ rpm,
tpm, concurrency) and ``full`` (+ a token budget), and ``usd`` (a USD budget: priced).

``ab`` starts one gateway per revision (HEAD's work tree unless ``--head REV``) on core 0 and
the fake upstream and wrk on core 1, then runs wrk against every (gateway, key) cell in turn,
round after round, so drift on a shared machine hits every cell alike; it prints the median
CPU per request of each cell and the median of the per-round differences to the first cell.
A revision from before the store (``--rev OLD=fe0ae9e``) is served with its config key only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent

# --------------------------------------------------------------------- in process

INPROC_KEYS = {
    "plain": "",
    "limits": ", limits: {rpm: 100000000, tpm: 100000000000, concurrency: 10000}",
    "full": ", limits: {rpm: 100000000, tpm: 100000000000, concurrency: 10000}"
    ', budget: {amount: "1000000000", currency: tokens, period: month}',
    "usd": ", limits: {rpm: 100000000, tpm: 100000000000, concurrency: 10000}"
    ', budget: {amount: "1000000000", currency: USD, period: month}',
}


def _inproc_config(d: str) -> str:
    keys = "".join(
        f'  - {{name: {name}, key: "sk-hotpath-{name}-key-123", models: ["*"]{opts}}}\n'
        for name, opts in INPROC_KEYS.items()
    )
    return f"""
listen: 127.0.0.1:1
providers:
  fake: {{type: openai, base_url: "http://127.0.0.1:9/v1", api_key: "sk-upstream"}}
models:
  gpt-4o-mini: [{{provider: fake}}]
keys:
{keys}server: {{access_log: false}}
storage: {{url: "sqlite:///{d}/hotpath.db", journal_dir: "{d}/journal"}}
"""


async def _inproc(n: int, reps: int, only: str | None = None) -> dict[str, list[float]]:
    """CPU µs per request per key; ``only``: run that key once under callgrind instead (the
    instrumentation is switched on around the measured requests only)."""
    sys.path.insert(0, str(REPO))
    from qiao.config import loads
    from qiao.engine import Engine
    from qiao.observability.accesslog import RequestRecord

    d = tempfile.mkdtemp(prefix="qiao-hotpath-")
    engine = Engine(loads(_inproc_config(d)))
    await engine.start()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    model = "gpt-4o-mini"
    seq = 0

    async def one(secret: str) -> None:
        # What Surface.run and Engine.open do around the upstream call, in the same order.
        nonlocal seq
        seq += 1
        rec = RequestRecord(f"req_{seq:024d}", "POST", "/v1/chat/completions", 0.0)
        p = engine.keys.authenticate(secret)
        rec.key, rec.key_id, rec.team_id = p.name, p.scope_id, p.team_id
        p.allows_ip("127.0.0.1")
        engine.keys.check_model(p, model)
        rec.model = model
        routes = engine.router.resolve(model)
        admitted = await engine.gate.admit(p, model, routes[0].model, 300, body)
        rec.provider, rec.upstream_model = "fake", routes[0].model
        rec.attempts += 1
        rec.attempt_id = engine.accounting.pending(rec, rec.attempts)
        rec.status, rec.usage = 200, {"input_tokens": 12, "output_tokens": 30}
        engine.finish(rec)
        if admitted is not None:
            engine.gate.release(admitted, rec)

    async def batch(secret: str, count: int) -> float:
        c0 = time.process_time()
        for i in range(count):
            await one(secret)
            if i % 10 == 9:
                await asyncio.sleep(0)  # let the writer and the settle tasks run, as a server does
        await engine.gate.close()
        await engine.writer.drain(60)
        return (time.process_time() - c0) / count * 1e6

    if only is not None:
        await batch(f"sk-hotpath-{only}-key-123", 1000)  # warm-up
        _callgrind("-i", "on")
        await batch(f"sk-hotpath-{only}-key-123", n)
        _callgrind("-i", "off")
        _callgrind("-d")
        await engine.close()
        return {}
    results: dict[str, list[float]] = {name: [] for name in INPROC_KEYS}
    for name in INPROC_KEYS:  # warm-up: imports, statement caches, spend rows
        await batch(f"sk-hotpath-{name}-key-123", 2000)
    for _ in range(reps):  # interleaved, so drift hits every key alike
        for name in INPROC_KEYS:
            results[name].append(await batch(f"sk-hotpath-{name}-key-123", n))
    await engine.close()
    return results


def _callgrind(*what: str) -> None:
    subprocess.run(["callgrind_control", *what, str(os.getpid())], capture_output=True, check=True)


def cmd_instructions(args: argparse.Namespace) -> None:
    """Instructions per request of each key, counted by callgrind: the same figure on a busy
    machine as on a quiet one (user-space instructions only: system calls are not counted)."""
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind (apt-get install -y valgrind)")
    print(f"## In process: instructions per request (callgrind, {args.n} requests per key)\n")
    print("| Key | Instructions/request | over plain |\n|---|---:|---:|")
    plain = None
    for name in INPROC_KEYS:
        with tempfile.TemporaryDirectory(prefix="qiao-cg-") as tmp:
            out = Path(tmp) / "cg.out"
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
            cmd += [f"--callgrind-out-file={out}", sys.executable, __file__, "_callgrind"]
            cmd += [name, "-n", str(args.n)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=1800, cwd=tmp)
            total = 0
            for f in Path(tmp).glob("cg.out*"):
                for line in f.read_text(errors="replace").splitlines():
                    if line.startswith("totals:"):
                        total += int(line.split()[1])
        per = total / args.n
        plain = plain or per
        print(f"| {name} | {per:,.0f} | {per - plain:+,.0f} |", flush=True)


def cmd_callgrind_child(args: argparse.Namespace) -> None:
    asyncio.run(_inproc(args.n, 1, only=args.key))


def cmd_inproc(args: argparse.Namespace) -> None:
    try:
        import uvloop

        results = uvloop.run(_inproc(args.n, args.reps))
    except ImportError:
        results = asyncio.run(_inproc(args.n, args.reps))
    print(f"## In process: µs of CPU per request (median of {args.reps} x {args.n})\n")
    print("| Key | What runs | CPU µs/request |\n|---|---|---:|")
    what = {
        "plain": "auth + usage accounting (journal, SQLite rows)",
        "limits": "+ rpm/tpm/concurrency limits",
        "full": "+ a token budget (reserve, settle)",
        "usd": "+ a USD budget instead (priced twice: maximum, then actual)",
    }
    for name, runs in results.items():
        print(f"| {name} | {what[name]} | {statistics.median(runs):.1f} |")


# --------------------------------------------------------------------- gateways, A/B


_BARE_PATCHES = {  # file: (text, what goes after it): the features switched off
    "qiao/accounting.py": (
        "    def pending(self, rec: RequestRecord, attempt: int) -> str:\n",
        '        return "-"  # bench: no usage accounting\n',
    ),
    "qiao/policies/gate.py": (
        "    ) -> Pass | None:\n        plan = scopes_of(p, model)\n",
        "",
    ),
}


def _make_bare(src: Path) -> None:
    """The exported source with usage accounting and the gate switched off: what a request costs
    without them (auth stays). Fails loudly when the code moved and a patch no longer applies."""
    acc = src / "qiao/accounting.py"
    text = acc.read_text()
    head, line = _BARE_PATCHES["qiao/accounting.py"]
    settle = "        usage = usage_of(rec)\n        money = self.cost("
    if head not in text or settle not in text:
        raise SystemExit(
            "bench/hotpath.py --bare: qiao/accounting.py changed; update _BARE_PATCHES"
        )
    text = text.replace(head, head + line).replace(settle, "        return\n" + settle)
    acc.write_text(text)
    gate = src / "qiao/policies/gate.py"
    text = gate.read_text()
    head, _ = _BARE_PATCHES["qiao/policies/gate.py"]
    if head not in text:
        raise SystemExit("bench/hotpath.py --bare: qiao/policies/gate.py changed; update it")
    gate.write_text(
        text.replace(head, "    ) -> Pass | None:\n        return None\n" + head[22:], 1)
    )


def cmd_ab(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(BENCH))
    from procfs import GATEWAY_CORE, RIG_CORE, log
    from procs import Proc, export_rev, free_port, spawn, wait_ready
    from targets import BUDGET, CLIENT_KEY, LIMITS, LIMITS_ONLY_KEY, Target, qiao_config
    from wrk import run_wrk

    os.sched_setaffinity(0, {int(RIG_CORE)})
    run_dir = Path(tempfile.mkdtemp(prefix="qiao-ab-"))
    fake_port = free_port()
    fake = spawn(
        "fake",
        [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(fake_port)],
        RIG_CORE,
        run_dir / "fake.log",
        dict(os.environ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "QIAO_"))}
    qiao_bin = Path(sys.executable).parent / "qiao"
    qcmd = [str(qiao_bin)] if qiao_bin.exists() else [sys.executable, "-m", "qiao"]
    full_key, limits_key = "sk-bench-full-key-789", LIMITS_ONLY_KEY
    extra = (
        f'  - {{name: limits-only, key: "{limits_key}", models: ["*"], {LIMITS}}}\n'
        f'  - {{name: full, key: "{full_key}", models: ["*"], {LIMITS}, {BUDGET}}}\n'
    )
    gateways: list[tuple[str, Proc, Target, dict[str, str]]] = []
    try:
        wait_ready(fake, fake_port, "/health", 20)
        revs = [("HEAD", args.head)] + [tuple(r.split("=", 1)) for r in args.rev]
        if args.bare:
            revs.append(("BARE", args.head or "HEAD"))
        for name, rev in revs:
            genv = dict(env)
            if rev:
                _, src = export_rev(rev, run_dir / f"src-{name}")
                genv["PYTHONPATH"] = str(src)
                if name == "BARE":
                    _make_bare(src)
            config_py = run_dir / f"src-{name}/qiao/config.py"
            legacy = rev is not None and "StorageSettings" not in config_py.read_text()
            port = free_port()
            store = None if legacy else run_dir / f"store-{name}"
            if store is not None:
                store.mkdir()
            cfg = run_dir / f"{name}.yaml"
            cfg.write_text(qiao_config(port, fake_port, store, extra_keys="" if legacy else extra))
            proc = spawn(
                name,
                [*qcmd, "serve", "--config", str(cfg)],
                GATEWAY_CORE,
                run_dir / f"{name}.log",
                genv,
            )
            wait_ready(proc, port, "/healthz", 30)
            keys = {"plain": CLIENT_KEY}
            if not legacy:
                keys |= {"limits": limits_key, "full": full_key}
            target = Target(name, name, port, health="/healthz", cmd=["x"])
            gateways.append((name, proc, target, keys))
        cells = [(g, k) for g in gateways for k in g[3]]
        cpu: dict[str, list[float]] = {f"{g[0]}/{k}": [] for g, k in cells}
        for _, proc, target, keys in gateways:  # warm-up
            for key in keys.values():
                run_wrk(target, 2, proc.pid, fake.pid, key=key)
        deadline = time.monotonic() + args.max_minutes * 60
        for r in range(args.rounds):
            if time.monotonic() > deadline:
                print(f"(stopped after {r} rounds: --max-minutes)", file=sys.stderr)
                break
            for (name, proc, target, keys), kname in cells:
                for _ in range(3):  # a run with other load on the cores is re-done (twice)
                    res = run_wrk(target, args.seconds, proc.pid, fake.pid, key=keys[kname])
                    if res.get("non2xx") or res.get("error"):
                        raise RuntimeError(f"{name}/{kname}: errors in wrk run: {res}")
                    noisy = res["foreign_pct"] > args.noise_limit
                    log(
                        f"round {r + 1} {name}/{kname}: {res['cpu_us_per_req']:.0f} µs/req, "
                        f"foreign {res['foreign_pct']}%" + (" NOISY, redo" if noisy else "")
                    )
                    if not noisy:
                        break
                    time.sleep(2)
                cpu[f"{name}/{kname}"].append(res["cpu_us_per_req"])
    finally:
        for _, proc, _, _ in gateways:
            proc.stop()
        fake.stop()
    first = next(iter(cpu))
    n = min(len(v) for v in cpu.values())
    print(
        f"## Gateways, interleaved: CPU µs per request "
        f"(medians of {n} rounds x {args.seconds:g} s)\n"
    )
    print(f"| Cell | CPU µs/request | − {first}, paired median |\n|---|---:|---:|")
    for cell, runs in cpu.items():
        diff = statistics.median(a - b for a, b in zip(runs, cpu[first], strict=False))
        print(f"| {cell} | {statistics.median(runs):.0f} | {diff:+.0f} |")
    print(f"\nraw: {cpu}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("inproc", help="the hot-path calls in one process")
    a.add_argument("-n", type=int, default=10_000, help="requests per run (default 10,000)")
    a.add_argument("--reps", type=int, default=5, help="runs per key (default 5)")
    c = sub.add_parser("instructions", help="the same calls under callgrind (repeatable)")
    c.add_argument("-n", type=int, default=3000, help="requests per key (default 3,000)")
    child = sub.add_parser("_callgrind")  # run by `instructions` under valgrind
    child.add_argument("key", choices=list(INPROC_KEYS))
    child.add_argument("-n", type=int, default=3000)
    b = sub.add_parser("ab", help="whole gateways, interleaved rounds")
    b.add_argument("--head", default=None, help="a committed revision instead of the work tree")
    b.add_argument("--rev", action="append", default=[], help="NAME=REV, another gateway")
    b.add_argument(
        "--bare",
        action="store_true",
        help="also a gateway BARE: the head without usage accounting, limits and budgets",
    )
    b.add_argument("--rounds", type=int, default=5)
    b.add_argument("--seconds", type=float, default=5.0)
    b.add_argument("--max-minutes", type=float, default=15.0)
    b.add_argument("--noise-limit", type=float, default=10.0, help="%% foreign CPU per core")
    args = p.parse_args()
    if args.cmd == "inproc":
        os.sched_setaffinity(0, {0})
        cmd_inproc(args)
    elif args.cmd == "instructions":
        cmd_instructions(args)
    elif args.cmd == "_callgrind":
        cmd_callgrind_child(args)
    else:
        cmd_ab(args)


if __name__ == "__main__":
    main()
