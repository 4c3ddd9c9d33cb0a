"""Qiao benchmark: CPU, memory and noise readings from /proc (split from run.py)."""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
import time

GATEWAY_CORE = "0"
RIG_CORE = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEADLINE = [math.inf]  # perf_counter() after which noisy phases are no longer re-done


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------- /proc


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process tree, plus its reaped children."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if p == pid:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / CLK_TCK


def cpu_exact(pid: int) -> float:
    """CPU seconds of the live threads of the process tree, to the ns (schedstat); the stat
    ticks of cpu_seconds() are 10 ms, too coarse for a block of a few hundred streams."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError, ValueError):
                    with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[0])
    return total / 1e9


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


def core_ticks() -> dict[int, tuple[int, int, int]]:
    """Per CPU: (busy, total, steal) clock ticks since boot, from /proc/stat."""
    out: dict[int, tuple[int, int, int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
                total = sum(v)
                out[int(name[3:])] = (total - v[3] - v[4], total, v[7])
    return out


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """How busy each core was, and how much of that was not ours (a shared machine).

    Foreign CPU on the gateway core = its busy time minus the gateway's CPU; on
    the rig core = busy time minus the fake, wrk and this script. Steal is time
    the hypervisor gave to someone else.
    """

    def __init__(self, gw_pid: int | None, fake_pid: int) -> None:
        self.gw_pid, self.fake_pid = gw_pid, fake_pid
        self.t0 = time.perf_counter()
        self.ticks = core_ticks()
        self.gw = cpu_seconds(gw_pid) if gw_pid else 0.0
        self.rig = cpu_seconds(fake_pid) + children_cpu() + self_cpu()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        ticks = core_ticks()
        gw = (cpu_seconds(self.gw_pid) if self.gw_pid else 0.0) - self.gw
        rig = cpu_seconds(self.fake_pid) + children_cpu() + self_cpu() - self.rig
        out: dict[str, float] = {}
        for core, ours in ((int(GATEWAY_CORE), gw), (int(RIG_CORE), rig)):
            b0, _, s0 = self.ticks[core]
            b1, _, s1 = ticks[core]
            busy = (b1 - b0) / CLK_TCK
            out[f"core{core}_busy_pct"] = round(100 * busy / wall, 1)
            out[f"core{core}_foreign_pct"] = round(max(0.0, 100 * (busy - ours) / wall), 1)
            out[f"core{core}_steal_pct"] = round(100 * (s1 - s0) / CLK_TCK / wall, 1)
        return out

    @staticmethod
    def noisy(m: dict[str, float], limit: float) -> bool:
        return max(m[f"core{GATEWAY_CORE}_foreign_pct"], m[f"core{RIG_CORE}_foreign_pct"]) > limit


def wait_quiet(fake_pid: int, limit: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until neither core has > ``limit`` % foreign load."""
    t0 = time.perf_counter()
    max_wait = min(max_wait, max(0.0, DEADLINE[0] - t0))
    warned = False
    while True:
        m = Meter(None, fake_pid)
        time.sleep(1.0)
        r = m.stop()
        if not Meter.noisy(r, limit) or time.perf_counter() - t0 > max_wait:
            return time.perf_counter() - t0
        if not warned:
            log(f"machine busy (foreign load {r}); waiting up to {max_wait:g} s")
            warned = True
