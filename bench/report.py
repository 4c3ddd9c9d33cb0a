"""Qiao benchmark: the Markdown report and the target checks (split from run.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# --------------------------------------------------------------------- report


def _f(v: Any, fmt: str = "{:.0f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return fmt.format(v)


def _get(r: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(r, dict) or p not in r:
            return None
        r = r[p]
    return r


def markdown(report: dict[str, Any]) -> str:
    rows = [
        r
        for r in report["targets"]
        if "skipped" not in r and "error" not in r and r["name"] != "translate"
    ]
    direct = next((r for r in rows if r["name"] == "direct"), None)

    def added(r: dict[str, Any], *path: str) -> str:
        """Target minus the direct reference measured alongside it (else the direct row)."""
        v = _get(r, *path)
        d = _get(r, path[0], "ref", *path[1:])
        if d is None and direct is not None:
            d = _get(direct, *path)
        if v is None or d is None:
            return "–"
        if r is direct:
            return f"({v:.2f})"
        return f"{v - d:+.2f}"

    if not rows:
        return ""
    head = "| | " + " | ".join(r["label"] for r in rows) + " |"
    sep = "|---|" + "---:|" * len(rows)
    lines = [head, sep]

    def row(title: str, fn: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {title} | " + " | ".join(fn(r) for r in rows) + " |")

    row("Throughput, c=50 (req/s)", lambda r: _f(_get(r, "wrk", "rps")))
    row("**Req/s per gateway core**", lambda r: _f(_get(r, "wrk", "rps_per_core")))
    row("Gateway CPU per request (µs)", lambda r: _f(_get(r, "wrk", "cpu_us_per_req")))
    row("Gateway core busy, c=50 (%)", lambda r: _f(_get(r, "wrk", "gw_core_busy_pct")))
    row("Rig core busy, c=50 (%)", lambda r: _f(_get(r, "wrk", "rig_core_busy_pct")))
    row("Other load on the cores, c=50 (%)", lambda r: _f(_get(r, "wrk", "foreign_pct")))
    row(
        "Latency c=50 p50 / p99 (ms)",
        lambda r: (
            _f(_get(r, "wrk", "p50_ms"), "{:.2f}") + " / " + _f(_get(r, "wrk", "p99_ms"), "{:.2f}")
        ),
    )
    row("**Added latency @50 req/s p50** (ms)", lambda r: added(r, "open_loop", "p50_ms"))
    row("**Added latency @50 req/s p99** (ms)", lambda r: added(r, "open_loop", "p99_ms"))
    row("**Added TTFT p50** (ms)", lambda r: added(r, "stream", "ttft", "p50_ms"))
    row("Added TTFT p99 (ms)", lambda r: added(r, "stream", "ttft", "p99_ms"))
    row("Added stream total p50 (ms)", lambda r: added(r, "stream", "total", "p50_ms"))
    row("CPU per stream, 20 chunks (µs)", lambda r: _f(_get(r, "stream", "cpu_us_per_stream")))
    row("CPU per request at 50 req/s (µs)", lambda r: _f(_get(r, "open_loop", "cpu_us_per_req")))
    row("**RSS idle** (MB)", lambda r: _f(_get(r, "rss_idle_mb")))
    row("RSS idle after load (MB)", lambda r: _f(_get(r, "rss_after_load_mb")))
    row("**RSS, 1,000 open streams** (MB)", lambda r: _f(_get(r, "hold", "rss_peak_mb")))
    row(
        "Streams open / asked",
        lambda r: (
            f"{_get(r, 'hold', 'established')}/{_get(r, 'hold', 'requested')}"
            if _get(r, "hold")
            else "–"
        ),
    )
    row("RSS after streams closed (MB)", lambda r: _f(_get(r, "rss_after_streams_mb")))
    row("**Start-up to ready** (s)", lambda r: _f(_get(r, "startup_median_s"), "{:.2f}"))
    errs = lambda r: str(  # noqa: E731
        (_get(r, "wrk", "errors") or 0)
        + (_get(r, "open_loop", "errors") or 0)
        + (_get(r, "stream", "errors") or 0)
    )
    row("Errors (all phases)", errs)
    out = "\n".join(lines)
    notes = [
        f"- {r['label']}: skipped — {r['skipped']}" for r in report["targets"] if "skipped" in r
    ]
    notes += [f"- {r['label']}: failed — {r['error']}" for r in report["targets"] if "error" in r]
    by = {r["name"]: r for r in rows}
    q = by.get("qiao")
    if q:
        ratios = []
        for other in ("baseline", "starlette", "litellm"):
            o = by.get(other)
            if o and _get(o, "wrk", "rps_per_core") and _get(q, "wrk", "rps_per_core"):
                per_core = q["wrk"]["rps_per_core"] / o["wrk"]["rps_per_core"]
                raw = q["wrk"]["rps"] / o["wrk"]["rps"]
                ratios.append(
                    f"Qiao / {o['label']}: ×{per_core:.2f} req/s per core, ×{raw:.2f} raw req/s"
                )
        if direct and _get(q, "wrk", "rps"):
            ratios.append(f"Qiao / direct: ×{q['wrk']['rps'] / direct['wrk']['rps']:.2f} raw req/s")
        notes += [f"- {x}" for x in ratios]
    notes += cost_notes(by)
    for r in rows:
        st = r.get("store") or {}
        if "usage_rows" in st:
            notes.append(
                f"- {r['label']}: {st['usage_rows']} usage rows in the SQLite store at the end "
                f"({st['dir_mb']} MB with the journal)"
            )
    if notes:
        out += "\n\n" + "\n".join(notes)
    return out


def _cpu(by: dict[str, dict[str, Any]], name: str) -> float:
    v = _get(by.get(name) or {}, "wrk", "cpu_us_per_req")
    return v if isinstance(v, int | float) else math.nan


def cost_notes(by: dict[str, dict[str, Any]]) -> list[str]:
    """Differences of gateway CPU per request between the Qiao variants (closed loop)."""
    q, lim, mem, rev = (_cpu(by, n) for n in ("qiao", "qiao+limits", "qiao-mem", "qiao-rev"))
    out = []
    if not math.isnan(q + lim):
        out.append(f"- limits + budget (qiao+limits − qiao): {lim - q:+.0f} µs CPU per request")
        lo = _get(by["qiao+limits"], "wrk_extra", "limits only, no budget", "cpu_us_per_req")
        if lo is not None:
            out.append(f"- limits only, no budget (same process): {lo - q:+.0f} µs per request")
    if not math.isnan(q + mem):
        out.append(f"- SQLite store vs memory store (qiao − qiao-mem): {q - mem:+.0f} µs")
    if not math.isnan(q + rev):
        label = by["qiao-rev"]["label"]
        out.append(f"- Qiao now vs {label} (qiao − qiao-rev): {q - rev:+.0f} µs")
        if not math.isnan(lim):
            out.append(f"- qiao+limits vs {label}: {lim - rev:+.0f} µs")
    return out


def translate_markdown(report: dict[str, Any]) -> str:
    r = next((r for r in report["targets"] if r["name"] == "translate" and "translate" in r), None)
    if r is None:
        return ""
    tr = r["translate"]
    lines = [
        f"Translation, {tr.get('request_bytes', 0)}-byte OpenAI chat request "
        "(passthrough: to the OpenAI-type fake; translated: to the Anthropic-type fake)",
        "",
        "| | passthrough | translated | translated − passthrough |",
        "|---|---:|---:|---:|",
    ]

    def row(title: str, p: Any, t: Any, fmt: str = "{:.0f}", dfmt: str = "") -> None:
        dfmt = dfmt or fmt.replace("{:", "{:+").replace("{:++", "{:+")
        d = t - p if isinstance(p, int | float) and isinstance(t, int | float) else None
        lines.append(f"| {title} | {_f(p, fmt)} | {_f(t, fmt)} | {_f(d, dfmt)} |")

    w = tr.get("wrk", {})
    for title, k in (
        ("Closed loop c=50 (req/s)", "rps"),
        ("**Req/s per gateway core**", "rps_per_core"),
        ("**Gateway CPU per request** (µs)", "cpu_us_per_req"),
    ):
        row(title, _get(w, "passthrough", k), _get(w, "translated", k))
    o = tr.get("open_loop", {})
    for pct in ("p50", "p99"):
        row(
            f"Latency @50 req/s {pct}, 50 ms upstream (ms)",
            _get(o, "passthrough", f"{pct}_ms"),
            _get(o, "translated", f"{pct}_ms"),
            "{:.2f}",
            "**{:+.2f}**" if pct == "p50" else "{:+.2f}",
        )
    for pct in ("p50", "p99"):
        p, t = _get(o, "passthrough", f"{pct}_ms"), _get(o, "translated", f"{pct}_ms")
        dp, dt = _get(o, "direct_openai", f"{pct}_ms"), _get(o, "direct_anthropic", f"{pct}_ms")
        if None not in (p, t, dp, dt):
            row(f"Added over the fake itself @50 req/s {pct} (ms)", p - dp, t - dt, "{:+.2f}")
    sq = tr.get("stream_seq", {})
    row(
        "Streams one at a time: CPU per stream (µs)",
        _get(sq, "passthrough", "cpu_us_per_stream"),
        _get(sq, "translated", "cpu_us_per_stream"),
    )
    row(
        "**CPU per chunk** = CPU / (N × 20), one at a time (µs)",
        _get(sq, "passthrough", "cpu_us_per_chunk"),
        _get(sq, "translated", "cpu_us_per_chunk"),
        "{:.1f}",
        "**{:+.1f}**",
    )
    row(
        "TTFT p50, one at a time (ms)",
        _get(sq, "passthrough", "ttft", "p50_ms"),
        _get(sq, "translated", "ttft", "p50_ms"),
        "{:.2f}",
        "{:+.2f}",
    )
    ld = tr.get("stream_loaded", {})
    for n in (20, 200):
        row(
            f"CPU per chunk, {n}-chunk streams, 20 at a time (µs)",
            _get(ld, f"passthrough_n{n}", "cpu_us_per_chunk"),
            _get(ld, f"translated_n{n}", "cpu_us_per_chunk"),
            "{:.1f}",
            "{:+.1f}",
        )
    mg = tr.get("marginal_us_per_chunk", {})
    row(
        "Marginal CPU per chunk (200- vs 20-chunk streams) (µs)",
        mg.get("passthrough"),
        mg.get("translated"),
        "{:.1f}",
        "{:+.1f}",
    )
    errs = {
        side: (_get(w, side, "errors") or 0)
        + (_get(o, side, "errors") or 0)
        + (_get(sq, side, "errors") or 0)
        + sum(v.get("errors", 0) for k, v in ld.items() if k.startswith(side))
        for side in ("passthrough", "translated")
    }
    lines.append(f"| Errors (all phases) | {errs['passthrough']} | {errs['translated']} | |")
    rss = tr.get("rss_after_translated_streams") or []
    ho = tr.get("hold") or {}
    lines += [
        "",
        "- RSS (MB) after N translated streams: "
        + ", ".join(f"{n}: {v:.1f}" for n, v in rss)
        + f"; with {ho.get('established')}/{ho.get('requested')} translated streams open: "
        + f"{_f(ho.get('rss_peak_mb'))} peak; after they closed: {_f(tr.get('rss_after_hold_mb'))}",
    ]
    return "\n".join(lines)


def targets_check(report: dict[str, Any]) -> str:
    by = {r["name"]: r for r in report["targets"] if "skipped" not in r and "error" not in r}
    q, d, lt = by.get("qiao"), by.get("direct"), by.get("litellm")
    if not q:
        return ""

    def diff(path: tuple[str, ...]) -> float:
        a, b = _get(q, *path), _get(q, path[0], "ref", *path[1:])
        if b is None and d is not None:
            b = _get(d, *path)
        return a - b if a is not None and b is not None else math.nan

    checks = [
        ("Req/s per gateway core ≥ 2,500", _get(q, "wrk", "rps_per_core"), 2500, ">="),
        ("Added latency p50 ≤ 1.5 ms", diff(("open_loop", "p50_ms")), 1.5, "<="),
        ("Added latency p99 ≤ 3 ms", diff(("open_loop", "p99_ms")), 3.0, "<="),
        ("Added TTFT p50 ≤ 1.5 ms", diff(("stream", "ttft", "p50_ms")), 1.5, "<="),
        ("RSS idle ≤ 100 MB", _get(q, "rss_idle_mb"), 100, "<="),
        ("RSS 1,000 open streams ≤ 250 MB", _get(q, "hold", "rss_peak_mb"), 250, "<="),
        ("Start-up ≤ 1.5 s", _get(q, "startup_median_s"), 1.5, "<="),
    ]
    if lt and _get(lt, "wrk", "rps_per_core"):
        ratio = _get(q, "wrk", "rps_per_core") / lt["wrk"]["rps_per_core"]
        checks.insert(1, ("≥ 20× LiteLLM per core", ratio, 20, ">="))
    q_cpu, lim, mem, rev = (_cpu(by, n) for n in ("qiao", "qiao+limits", "qiao-mem", "qiao-rev"))
    if "qiao+limits" in by:
        checks.append(
            (
                "Req/s per core ≥ 2,500 with limits + budget",
                _get(by["qiao+limits"], "wrk", "rps_per_core"),
                2500,
                ">=",
            )
        )
        checks.append(("limits + budget over plain key (µs/req)", lim - q_cpu, math.inf, "<="))
        if not math.isnan(rev):
            title = "auth+limits+accounting ≤ 100 µs (qiao+limits − qiao-rev)"
            checks.append((title, lim - rev, 100, "<="))
        if not math.isnan(mem):
            title = "limits+budget+SQLite usage ≤ 100 µs (qiao+limits − qiao-mem)"
            checks.append((title, lim - mem, 100, "<="))
    tx = _get(by.get("translate") or {}, "translate")
    if tx:
        o, sq = tx.get("open_loop", {}), tx.get("stream_seq", {})
        lat = (_get(o, "translated", "p50_ms") or math.nan) - (
            _get(o, "passthrough", "p50_ms") or math.nan
        )
        chunk = (_get(sq, "translated", "cpu_us_per_chunk") or math.nan) - (
            _get(sq, "passthrough", "cpu_us_per_chunk") or math.nan
        )
        mg = tx.get("marginal_us_per_chunk", {})
        marg = mg.get("translated", math.nan) - mg.get("passthrough", math.nan)
        rss = [v for _, v in tx.get("rss_after_translated_streams") or []]
        checks += [
            ("Translation adds ≤ 0.5 ms p50 @50 req/s, 2 KB", lat, 0.5, "<="),
            ("Stream translation ≤ 20 µs CPU/chunk (CPU/(N×20) diff)", chunk, 20, "<="),
            ("… marginal per chunk (200- vs 20-chunk streams) diff", marg, 20, "<="),
            (
                "RSS growth over the second half of the translated streams ≤ 2 MB",
                rss[-1] - rss[len(rss) // 2] if len(rss) >= 3 else math.nan,
                2,
                "<=",
            ),
        ]
    lines = ["| Target (Qiao) | Measured | Met |", "|---|---:|:---:|"]
    for title, v, limit, op in checks:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            lines.append(f"| {title} | – | ? |")
            continue
        ok = v >= limit if op == ">=" else v <= limit
        verdict = "(info)" if limit == math.inf else ("yes" if ok else "**no**")
        lines.append(f"| {title} | {v:.2f} | {verdict} |")
    return "\n".join(lines)
