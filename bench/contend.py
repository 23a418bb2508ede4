"""toolwire and llama-server on a machine they share: tokens/s quiet, then beside 1 and 2 busy
processes that the bench itself starts and stops, in one run; one table.

    python -m bench.contend                       # streams 1 and 4; 0, 1, 2 neighbours; 3 rounds
    python -m bench.contend --neighbours 0 1 --concurrency 1 --rounds 5
    python -m bench.contend --policies adaptive   # leave out toolwire --thread-policy fixed
    python -m bench.contend --policies one --peers poll0 one   # the fixed-count variants

A neighbour is `python3 -c "while True: pass"` under `timeout`, so none outlives the bench
even if the bench is killed. Every server runs for the whole bench with a step thread per CPU
(toolwire's default, llama-server `-t <CPUs>`); toolwire runs once per `--policies` value
(`fixed` is the thread count before the adaptive policy; `one` is `--threads 1`; `torch-*`
the same on the torch step), and
llama-server once per `--peers` value (`default` as its users run it, `poll0` with `--poll 0`:
its threads sleep between graphs instead of polling; `one` is `-t 1`). Prose, `--max-tokens`
tokens a request; a load that takes longer than `--load-timeout` seconds is cut and shows as "cut".
The servers take turns within each round, the first changing from round to round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time

from toolwire.runtime import model_source

from . import llama_cpp, remote
from .peer import peer_env, peer_template_args
from .run import KEY, OUT, start_stack, stop_stack
from .workloads import body

BUSY = "while True: pass"
TOOLWIRE_FLAGS = {
    "adaptive": ["--thread-policy", "adaptive"],
    "fixed": ["--thread-policy", "fixed"],
    "one": ["--thread-policy", "fixed", "--threads", "1"],
    "torch-adaptive": ["--step", "torch", "--thread-policy", "adaptive"],
    "torch-fixed": ["--step", "torch", "--thread-policy", "fixed"],
}
PEER_FLAGS = {"default": [], "poll0": ["--poll", "0"], "one": ["-t", "1"]}


class Neighbours:
    """`n` busy processes for as long as the block runs (and never longer than `bound_s`)."""

    def __init__(self, n: int, bound_s: float):
        self.n, self.bound_s = n, bound_s
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Neighbours:
        for _ in range(self.n):
            cmd = ["timeout", str(int(self.bound_s)), sys.executable, "-c", BUSY]
            self.procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
        time.sleep(0.5 if self.n else 0)  # let the kernel spread them
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


async def one_load(url: str, model: str, streams: int, r: int, args) -> dict | None:
    bodies = [body("text", r * streams + i, model, args.max_tokens) for i in range(streams)]
    try:
        return await asyncio.wait_for(remote.run_load(url, KEY, bodies), args.load_timeout)
    except TimeoutError:
        return None


async def measure(servers: dict, args) -> dict:
    """{server: {"neighbours/streams": {"tok_s": median or None, "rounds": [...]}}}"""
    for url, model in servers.values():
        await remote.run_load(url, KEY, [body("text", i, model, 8) for i in range(2)])
    res: dict = {name: {} for name in servers}
    bound = args.load_timeout * args.rounds * len(servers) * len(args.concurrency) + 60
    for k in args.neighbours:
        with Neighbours(k, bound):
            for c in args.concurrency:
                per: dict = {name: [] for name in servers}
                for r in range(args.rounds):
                    order = list(servers) if r % 2 == 0 else list(reversed(servers))
                    for name in order:
                        url, model = servers[name]
                        out = await one_load(url, model, c, r, args)
                        per[name].append(out["tok_s"] if out else None)
                for name in servers:
                    done = [x for x in per[name] if x is not None]
                    tok_s = statistics.median(done) if len(done) == len(per[name]) else None
                    res[name][f"{k}/{c}"] = {"tok_s": tok_s, "rounds": per[name]}
                    shown = "cut" if tok_s is None else f"{tok_s:7.1f}"
                    print(
                        f"  {k} busy  C={c:<2} {name:22} {shown} tok/s  rounds "
                        + " ".join("cut" if x is None else f"{x:.1f}" for x in per[name]),
                        flush=True,
                    )
    return res


def table(res: dict, neighbours: list[int], levels: list[int]) -> str:
    """tok/s per server and streams, quiet and with each number of busy neighbours, each with
    its fraction of the same server's quiet figure; the last column is toolwire's tok/s over
    llama-server's under the same neighbours."""
    head = " | ".join(f"{k} busy" if k else "quiet" for k in neighbours)
    lines = [f"| streams | server | {head} |", "|" + "---|" * (2 + len(neighbours))]
    for c in levels:
        for name, by in res.items():
            quiet = by.get(f"0/{c}", {}).get("tok_s")
            cells = []
            for k in neighbours:
                t = by[f"{k}/{c}"]["tok_s"]
                if t is None:
                    cells.append("cut")
                elif k and quiet:
                    cells.append(f"{t:.1f} ({t / quiet:.2f}x)")
                else:
                    cells.append(f"{t:.1f}")
            lines.append(f"| {c} | {name} | " + " | ".join(cells) + " |")
    peer = res.get("llama-server")
    if peer:
        lines += ["", "toolwire / llama-server tok/s under the same neighbours:", ""]
        lines += [f"| streams | server | {head} |", "|" + "---|" * (2 + len(neighbours))]
        for c in levels:
            for name, by in res.items():
                if name == "llama-server":
                    continue
                cells = []
                for k in neighbours:
                    a, b = by[f"{k}/{c}"]["tok_s"], peer[f"{k}/{c}"]["tok_s"]
                    cells.append(f"{a / b:.2f}" if a and b else "-")
                lines.append(f"| {c} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--neighbours", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--load-timeout", type=float, default=120.0)
    p.add_argument(
        "--policies", nargs="+", default=["adaptive", "fixed"], choices=list(TOOLWIRE_FLAGS)
    )
    p.add_argument("--peers", nargs="+", default=["default"], choices=list(PEER_FLAGS))
    p.add_argument("--no-peer", action="store_true", help="toolwire only")
    p.add_argument(
        "--peer-threads", type=int, default=len(os.sched_getaffinity(0)), help="llama-server -t"
    )
    p.add_argument("--out", default=str(OUT / "contend.json"))
    args = p.parse_args()
    if 0 not in args.neighbours:
        p.error("--neighbours needs 0: the quiet figure each ratio is against")
    args.model, args.dtype = model_source.EMBEDDED, "auto"
    src = model_source.resolve(args.model)
    gguf = str(pathlib.Path(src.folder, src.gguf_file))
    OUT.mkdir(exist_ok=True)
    procs, servers = [], {}
    try:
        for variant in [] if args.no_peer else args.peers:
            peer, url = llama_cpp.serve(
                gguf,
                max(args.concurrency),
                args.peer_threads,
                extra=("--jinja", *peer_template_args("hermes"), *PEER_FLAGS[variant]),
                env=peer_env(False),
            )
            procs.append(peer)
            name = "llama-server" + (f" {variant}" if variant != "default" else "")
            servers[name] = (url, "embedded")
        for policy in args.policies:
            args.stack_flags = TOOLWIRE_FLAGS[policy]
            stack, url, model = start_stack(args)
            procs.append(stack)
            servers[f"toolwire {policy}"] = (url, model)
        res = asyncio.run(measure(servers, args))
    finally:
        for proc in procs:
            stop_stack(proc)
    text = table(res, args.neighbours, args.concurrency)
    print("\n" + text)
    out = pathlib.Path(args.out)
    out.write_text(
        json.dumps({"args": vars(args) | {"stack_flags": None}, "results": res}, indent=2)
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
