"""The memory of each process of `toolwire up`, idle after one tool round: resident (RSS, what
`ps` shows) and proportional (PSS: a page shared by n processes counts 1/n in each), so that
the column sums to what the stack holds. Libraries mapped by several processes (torch's, the
interpreter's) count fully in each RSS; PSS splits them.

    python -m bench.memory                    # the embedded model, the default stack
    python -m bench.memory --stack-flag=--grammar-workers=1
    python -m bench.memory --baseline dfaa295  # an older commit's stack too, in the same run

One tool round: `make up`'s (toolwire/stack/demo.py), printed as it goes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from toolwire.runtime import model_source
from toolwire.stack.demo import weather_flow

from . import baseline
from .run import KEY, OUT, start_stack, stop_stack
from .soak import processes


def memory_mb(pid: int) -> dict[str, float]:
    """{"rss": MB, "pss": MB} from /proc/<pid>/smaps_rollup (NaN where unreadable)."""
    out = {"rss": float("nan"), "pss": float("nan")}
    try:
        text = pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key.lower()] = int(rest.split()[0]) / 1024
    return out


def measure(args, tree: baseline.Tree | None = None) -> dict[str, dict[str, float]]:
    """Start a stack (the current tree's, or tree's), run the tool round, read each process."""
    proc, url, model = start_stack(args, tree)
    try:
        weather_flow(url, model, KEY)  # the tool round `make up` shows
        time.sleep(args.settle)
        pids = {**processes(proc.pid), "launcher (toolwire up)": proc.pid}
        if tree is not None:
            baseline.check_processes(tree, pids)
        return {name: memory_mb(pid) for name, pid in pids.items()}
    finally:
        stop_stack(proc)


def table(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row a process, RSS and PSS for each run; a process a run lacks shows as -."""
    names = list(dict.fromkeys(n for res in runs.values() for n in res))
    head = "| process | " + " | ".join(f"RSS MB {r} | PSS MB {r}" for r in runs) + " |"
    lines = [head, "|---|" + "---|---|" * len(runs)]
    for name in names:
        cells = []
        for res in runs.values():
            m = res.get(name)
            cells += [f"{m['rss']:.0f}", f"{m['pss']:.0f}"] if m else ["-", "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = []
    for res in runs.values():
        totals += [f"**{sum(m[k] for m in res.values()):,.0f}**" for k in ("rss", "pss")]
    lines.append("| **all** | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--stack-flag", dest="stack_flags", action="append", default=[])
    p.add_argument("--settle", type=float, default=3.0, help="seconds idle before reading")
    p.add_argument("--baseline", help="also measure this commit's stack (bench/baseline.py)")
    p.add_argument("--out", default=str(OUT / "memory.json"))
    args = p.parse_args()
    args.model, args.dtype, args.concurrency = model_source.EMBEDDED, "auto", [1]
    OUT.mkdir(exist_ok=True)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    if args.baseline:
        tree, _ = baseline.prepare(args.baseline)
        print(f"baseline {args.baseline} = {tree.sha}: {tree.path}", flush=True)
        runs[tree.short] = measure(args, tree)
    runs["this tree"] = measure(args)
    print(table(runs))
    pathlib.Path(args.out).write_text(
        json.dumps({"flags": args.stack_flags, "runs": runs}, indent=2)
    )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
