"""How busy the machine was while a latency row was timed, apart from the process tree being timed.

CPU time of the whole machine comes from /proc/stat (via psutil); the timed process tree's own CPU time is
subtracted, so what remains is what other processes used. A row timed while others used the cores it needed is
marked noisy: its numbers describe contention, not the model.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Optional

NOISY_SPREAD = 2.0  # p90 / p50 above this is implausible for a fixed input on an idle machine
CORE_SLACK = 0.25  # cores other processes may use before a row counts as contended
MIN_WINDOW_S = 0.5  # /proc/stat counts in 10 ms ticks: shorter windows cannot tell who used the CPU


@dataclass(frozen=True)
class Sample:
    wall: float
    machine_busy: float  # CPU-seconds of all processes since boot
    own: float  # CPU-seconds of this process and its children (alive or finished)
    loadavg: float


def sample() -> Sample:
    import psutil

    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    me = psutil.Process()
    own = sum(me.cpu_times()[:4])  # user, system, children_user, children_system
    for child in me.children(recursive=True):
        try:
            own += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return Sample(time.monotonic(), busy, own, os.getloadavg()[0])


def contention(before: Sample, after: Sample) -> dict[str, Any]:
    """Cores other processes kept busy between two samples, and the load average at both ends."""
    wall = after.wall - before.wall
    cores = os.cpu_count() or 1
    others = None
    if wall >= MIN_WINDOW_S:
        used = (after.machine_busy - before.machine_busy) - (after.own - before.own)
        others = round(min(float(cores), max(0.0, used / wall)), 3)
    return {"other_busy_cores": others, "window_s": round(wall, 3), "loadavg_before": round(before.loadavg, 2),
            "loadavg_after": round(after.loadavg, 2), "cores": cores}


def noise_reasons(row: dict[str, Any], load: dict[str, Any], threads: int) -> list[str]:
    """Why a row's numbers cannot be trusted, or [] when the machine left it alone."""
    reasons = []
    cores = load.get("cores") or 1
    others = load.get("other_busy_cores")
    if others is not None and cores - others < min(threads, cores) - CORE_SLACK:
        reasons.append(f"other processes kept {load['other_busy_cores']:.2f} of {cores} cores busy while it ran "
                       f"({threads} thread(s) needed)")
    p50, p90 = row.get("p50_ms"), row.get("p90_ms")
    if p50 and p90 and p90 / p50 > NOISY_SPREAD:
        reasons.append(f"p90/p50 is {p90 / p50:.2f}, implausibly wide for a fixed input")
    return reasons


def peak_rss_mb(pid: Optional[int] = None) -> Optional[float]:
    """A process's own peak resident memory (VmHWM), in MiB. Linux resets it at exec, unlike getrusage's
    ru_maxrss, which a worker inherits from the process that forked it."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
