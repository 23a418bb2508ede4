"""Two `toolwire up` on one machine, both loaded at once, against one of them alone; once per
thread policy, in one run.

    python -m bench.two_stacks                    # adaptive and fixed; 1 and 4 streams; 3 rounds
    python -m bench.two_stacks --policies adaptive --concurrency 1 --max-tokens 128

Replicas inside one `toolwire up` split the CPUs between them from the start; two stacks
started separately do not know of each other, so each starts a step thread per CPU and each is
the other's busy neighbour (bench/contend.py measures a plain busy process). Prose,
`--max-tokens` tokens a request; in each round stack A runs alone, then A and B together with
the same streams each. A fair share is half of A alone, each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import sys

from toolwire.runtime import model_source

from . import remote
from .contend import TOOLWIRE_FLAGS
from .run import KEY, OUT, start_stack, stop_stack
from .workloads import body


def load(server: tuple[str, str], first: int, c: int, args):
    """c prose requests to one stack, numbered from `first`."""
    url, model = server
    bodies = [body("text", first + i, model, args.max_tokens) for i in range(c)]
    return remote.run_load(url, KEY, bodies)


async def rounds(a: tuple[str, str], b: tuple[str, str], args) -> dict:
    for server in (a, b):
        await load(server, 0, 2, argparse.Namespace(max_tokens=8))
    res: dict = {}
    for c in args.concurrency:
        alone, pair = [], []
        for r in range(args.rounds):
            alone.append((await load(a, r * c, c, args))["tok_s"])
            both = await asyncio.gather(load(a, r * c, c, args), load(b, 1000 + r * c, c, args))
            pair.append([x["tok_s"] for x in both])
        res[str(c)] = s = {
            "alone_tok_s": statistics.median(alone),
            "each_tok_s": statistics.median(x for p in pair for x in p),
            "rounds": {"alone": alone, "pair": pair},
        }
        print(
            f"  C={c:<2} alone {s['alone_tok_s']:6.1f} tok/s  each of two "
            f"{s['each_tok_s']:6.1f} ({s['each_tok_s'] / s['alone_tok_s']:.2f}x)",
            flush=True,
        )
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument(
        "--policies", nargs="+", default=["adaptive", "fixed"], choices=list(TOOLWIRE_FLAGS)
    )
    p.add_argument("--out", default=str(OUT / "two_stacks.json"))
    args = p.parse_args()
    args.model, args.dtype = model_source.EMBEDDED, "auto"
    OUT.mkdir(exist_ok=True)
    res = {}
    for policy in args.policies:
        print(f"toolwire {policy}, two stacks:", flush=True)
        args.stack_flags = TOOLWIRE_FLAGS[policy]
        stacks = []
        try:
            for _ in range(2):
                proc, url, model = start_stack(args)
                stacks.append((proc, url, model))
            (_, ua, ma), (_, ub, mb) = stacks
            res[policy] = asyncio.run(rounds((ua, ma), (ub, mb), args))
        finally:
            for proc, _, _ in stacks:
                stop_stack(proc)
    lines = [
        "| streams each | policy | one stack alone tok/s | each of two stacks | of alone |",
        "|---|---|---|---|---|",
    ]
    for c in args.concurrency:
        for policy, by in res.items():
            s = by[str(c)]
            ratio = s["each_tok_s"] / s["alone_tok_s"]
            lines.append(
                f"| {c} | {policy} | {s['alone_tok_s']:.1f} | {s['each_tok_s']:.1f} | {ratio:.2f}x |"
            )
    print("\n" + "\n".join(lines))
    pathlib.Path(args.out).write_text(json.dumps({"args": vars(args), "results": res}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
