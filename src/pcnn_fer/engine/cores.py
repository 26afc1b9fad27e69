"""Free CPU cores, measured rather than assumed: the idle + iowait share of the total jiffies in ``/proc/stat`` over a
short window, on the CPUs this process may run on (``os.sched_getaffinity``), with the CPU time this process and its
children used in the same window (``/proc/PID/stat``) counted as free, since it is ours to give.

Linux only: where ``/proc/stat`` is missing :func:`measure_free_cores` returns None and callers keep their fixed
choice. A cgroup CPU quota is not seen (the jiffies are the host's); ``sched_getaffinity`` and the load are.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CpuTimes", "CoreMeasurement", "free_cores", "measure_free_cores", "parse_proc_stat",
           "process_jiffies", "usable_cpus"]

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    """One snapshot: per CPU index the (idle + iowait, total) jiffies of ``/proc/stat``, and per process id of
    ours the jiffies (user + system) it had used by then."""

    per_cpu: dict[int, tuple[int, int]]
    own: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CoreMeasurement:
    """What one measurement found: the CPUs this process may use, how many of them other processes left free,
    and the window it took."""

    usable: int
    free: float
    window_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in ``cv.json``)."""
        return {"usable": self.usable, "free": round(self.free, 2), "window_s": self.window_s,
                "source": "/proc/stat idle+iowait over the window, own processes counted as free"}


def parse_proc_stat(text: str) -> dict[int, tuple[int, int]]:
    """The ``cpuN`` lines of ``/proc/stat`` text as ``{N: (idle + iowait, total)}`` jiffies (guest time is already
    inside user / nice, so it is not added twice)."""
    per_cpu = {}
    for line in text.splitlines():
        name, *values = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        jiffies = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
        jiffies += [0] * (8 - len(jiffies))
        per_cpu[int(name[3:])] = (jiffies[3] + jiffies[4], sum(jiffies))
    return per_cpu


def free_cores(before: CpuTimes, after: CpuTimes, cpus: Iterable[int]) -> float:
    """Cores among ``cpus`` that other processes left unused between two snapshots: ``len(cpus)`` less the busy
    jiffies of those CPUs (total − idle − iowait) that were not our own, in units of one CPU's window; clamped to
    ``[0, len(cpus)]``. A CPU missing from either snapshot is left out; a process of ours that ended in the window
    counts as another's (its last jiffies are unknown), one that started in it counts in full."""
    cpus = [c for c in cpus if c in before.per_cpu and c in after.per_cpu]
    if not cpus:
        raise ValueError("no CPU of the affinity set appears in both /proc/stat snapshots")
    spans = [after.per_cpu[c][1] - before.per_cpu[c][1] for c in cpus]
    window = sum(spans) / len(cpus)  # jiffies one CPU ticked through
    if window <= 0:
        raise ValueError("the two /proc/stat snapshots span no time")
    busy = sum(span - (after.per_cpu[c][0] - before.per_cpu[c][0]) for c, span in zip(cpus, spans))
    own = sum(max(0, used - before.own.get(pid, 0)) for pid, used in after.own.items())
    others = max(0, busy - own) / window
    return min(float(len(cpus)), max(0.0, len(cpus) - others))


def usable_cpus() -> set[int]:
    """The CPU indices this process may run on (``os.sched_getaffinity``; all CPUs where it does not exist)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def process_jiffies(pids: Iterable[int]) -> dict[int, int]:
    """User + system jiffies used so far by each of the processes ``pids`` (``/proc/PID/stat``; one that is gone is
    left out)."""
    used = {}
    for pid in pids:
        try:
            values = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        used[pid] = int(values[11]) + int(values[12])  # utime, stime: fields 14 and 15 of proc(5)
    return used


def _own_pids() -> list[int]:
    return [os.getpid(), *(p.pid for p in multiprocessing.active_children() if p.pid is not None)]


def _snapshot(own_pids: list[int]) -> CpuTimes:
    return CpuTimes(parse_proc_stat(PROC_STAT.read_text()), process_jiffies(own_pids))


def measure_free_cores(window_s: float = 0.5, own_pids: Iterable[int] | None = None) -> CoreMeasurement | None:
    """Measure over ``window_s`` seconds how many of this process's usable CPUs other processes leave free
    (``own_pids``, default this process and its live multiprocessing children, count as free); None where
    ``/proc/stat`` cannot be read (not Linux)."""
    pids = list(_own_pids() if own_pids is None else own_pids)
    try:
        before = _snapshot(pids)
        time.sleep(window_s)
        after = _snapshot(pids)
    except OSError:
        return None
    cpus = usable_cpus()
    try:
        return CoreMeasurement(len(cpus), free_cores(before, after, cpus), window_s)
    except ValueError:
        return None
