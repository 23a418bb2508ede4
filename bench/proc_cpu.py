"""CPU seconds and context switches of each process of a running `toolwire up`, read from /proc:
what each service costs per streamed token, measured apart from wall-clock noise. On 2 cores
every switch into a serving thread takes a core from one of the step's threads (the other then
waits at the op's barrier), so switches per token say what CPU time alone does not."""

from __future__ import annotations

import os
import pathlib

from toolwire.stack.launcher import child_pids

TICK = os.sysconf("SC_CLK_TCK")
SERVICES = ("template", "decode", "extractor", "gateway")


def _stat(pid: int) -> list[str]:
    text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields after the command name


def service_pids(parent: int) -> dict[str, int]:
    """The `toolwire serve <service>` children of a `toolwire up` process."""
    found = {}
    for pid in child_pids(parent):
        try:
            argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for name in SERVICES:
            if name.encode() in argv and b"serve" in argv:
                found[name] = pid
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            f = _stat(pid)
            out[name] = (int(f[11]) + int(f[12])) / TICK  # utime + stime
        except OSError:
            out[name] = float("nan")
    return out


def context_switches(pids: dict[str, int]) -> dict[str, float]:
    """Voluntary and involuntary switches of each process's threads alive when read (gRPC's
    poller and event-engine threads hand each message on, so the main thread's count is not
    enough). A thread that ends between two reads drops out of the difference: the ggml
    step's per-step worker threads are not counted (unlike cpu_seconds, which keeps them)."""
    out = {}
    for name, pid in pids.items():
        try:
            tasks = list(pathlib.Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            out[name] = float("nan")  # the process ended
            continue
        total = 0
        for task in tasks:
            try:
                lines = (task / "status").read_text().splitlines()
            except OSError:
                continue  # a thread that ended meanwhile
            total += sum(int(ln.split()[1]) for ln in lines if "ctxt_switches:" in ln)
        out[name] = total
    return out
