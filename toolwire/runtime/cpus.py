"""How many CPUs this process can use at once: its affinity, capped by its cgroup's CPU quota.

A container limited to 2 CPUs on a 64-core node still sees 64 CPUs in its affinity mask. An
engine step that starts a thread per CPU there runs 64 threads on 2 CPUs' worth of time, and
ggml's threads wait for each other by spinning at every op's barrier: a thread that spins
while its partner is descheduled burns its slice. Measured here (2 cores, two decode services
of 2 threads each, one beside the other): 0.5-0.7 s a token against 10 ms alone. Go
(automaxprocs), the JVM and .NET read the same quota for the same reason.

cgroup v2 (`cpu.max`: "QUOTA PERIOD" or "max PERIOD"), the process's own group and every group
above it; cgroup v1 (`cpu.cfs_quota_us`, -1 for none) where v2 is absent.
"""

from __future__ import annotations

import math
import os
import pathlib
import time
from collections.abc import Callable

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")


def quota_cpus(cpu_max: str) -> float | None:
    """CPUs a cgroup v2 `cpu.max` line allows; None for no limit (or an unreadable line)."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: pathlib.Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cpus(root: pathlib.Path = CGROUP_ROOT, self_cgroup: str | None = None) -> float | None:
    """The smallest CPU quota on the way from this process's cgroup up to the root; None
    where no group sets one."""
    if self_cgroup is None:
        self_cgroup = _read(pathlib.Path("/proc/self/cgroup")) or ""
    limits = []
    v2 = next((line[3:] for line in self_cgroup.splitlines() if line.startswith("0::")), None)
    if v2 is not None and (root / "cgroup.controllers").exists():
        root = root.resolve()
        group = (root / v2.strip().lstrip("/")).resolve()
        for d in [group, *group.parents]:
            if d != root and root not in d.parents:
                break
            text = _read(d / "cpu.max")
            if text and (n := quota_cpus(text)) is not None:
                limits.append(n)
    else:  # cgroup v1: the container's own view of its cpu controller
        quota, period = (
            _read(root / "cpu" / "cpu.cfs_quota_us"),
            _read(root / "cpu" / "cpu.cfs_period_us"),
        )
        if quota and period and (n := quota_cpus(f"{quota.strip()} {period.strip()}")):
            limits.append(n)
    return min(limits) if limits else None


def _count(affinity: int, quota: float | None) -> int:
    # Rounded up: a quota of 1.5 CPUs runs 2 threads.
    return max(1, min(affinity, math.ceil(quota))) if quota else affinity


def explain(given: int | None = None) -> str:
    """Why a step runs the threads it does, for a startup line: the flag, or the affinity and
    the quota that `usable_cpus` reads."""
    if given:
        return f"{given} (--threads)"
    affinity = len(os.sched_getaffinity(0))
    quota = cgroup_cpus()
    limit = f"a CPU quota of {quota:g}" if quota else "no CPU quota"
    return f"{_count(affinity, quota)} ({affinity} CPUs in this process's affinity, {limit})"


def usable_cpus() -> int:
    """Threads worth starting for one compute step: the CPUs this process may run on, and no
    more than its cgroup's quota allows."""
    return _count(len(os.sched_getaffinity(0)), cgroup_cpus())


class IdleCpus:
    """CPUs of this process's affinity that sat idle since the previous reading (`/proc/stat`:
    idle and iowait ticks of each of those CPUs). A step on fewer threads than its ceiling reads
    it to tell when a neighbour has gone: one thread keeps its own core busy either way, so its
    step time cannot say. In a container `/proc/stat` is the host's, which is why a CPU quota
    caps the ceiling first."""

    def __init__(
        self,
        stat: pathlib.Path = pathlib.Path("/proc/stat"),
        cpus: set[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stat = stat
        self.cpus = cpus if cpus is not None else os.sched_getaffinity(0)
        self.clock = clock
        self.tick_s = 1 / os.sysconf("SC_CLK_TCK")
        self._last: tuple[float, int] | None = None

    def _idle_ticks(self) -> int | None:
        text = _read(self.stat)
        if text is None:
            return None
        total = 0
        for line in text.splitlines():
            name, _, rest = line.partition(" ")
            if (
                not name.startswith("cpu")
                or not name[3:].isdigit()
                or int(name[3:]) not in self.cpus
            ):
                continue
            fields = rest.split()
            if len(fields) < 5:
                return None
            total += int(fields[3]) + int(fields[4])  # idle, iowait
        return total

    def read(self) -> tuple[float, float] | None:
        """(idle CPUs, a mean over the interval; the interval's seconds) since the previous
        call; None at the first call or where /proc/stat cannot be read."""
        ticks, now = self._idle_ticks(), self.clock()
        if ticks is None:
            return None
        last, self._last = self._last, (now, ticks)
        if last is None or now <= last[0]:
            return None
        seconds = now - last[0]
        return (ticks - last[1]) * self.tick_s / seconds, seconds
