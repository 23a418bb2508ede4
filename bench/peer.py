"""toolwire against the llama.cpp server on the same GGUF, the same streamed load, levels
alternated so both see the same machine state; one table of ratios and a plot.

    python -m bench.peer                                 # C = 1, 4, 16; 3 rounds; 64 tokens
    python -m bench.peer --concurrency 1 16 --rounds 5

llama-server is built once into ~/.cache/toolwire/llama.cpp (bench/llama_cpp.py) or taken from
TOOLWIRE_LLAMA_SERVER. Both servers run for the whole bench; only one is loaded at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import sys

from toolwire.stack import model_source
from toolwire.stack.launcher import free_port, wait_for_health

from . import llama_cpp, remote
from .run import KEY, OUT, median_summary, start_stack
from .workloads import body


def ratio_table(res: dict, levels: list[int]) -> str:
    lines = [
        "| concurrent streams | toolwire tok/s | llama.cpp tok/s | ratio | "
        "TTFT p50 toolwire / llama.cpp | ITL p50 toolwire / llama.cpp |",
        "|" + "---|" * 6,
    ]
    for c in levels:
        t, p = res["toolwire"][str(c)], res["llama.cpp"][str(c)]
        lines.append(
            f"| {c} | {t['tok_s']:.1f} | {p['tok_s']:.1f} | {t['tok_s'] / p['tok_s']:.2f}"
            f" | {t['ttft_p50_ms']:.0f} / {p['ttft_p50_ms']:.0f} ms"
            f" | {t['itl_p50_ms']:.1f} / {p['itl_p50_ms']:.1f} ms |"
        )
    return "\n".join(lines)


async def measure(servers: dict, args) -> dict:
    for url, model in servers.values():  # warm both
        await remote.run_load(url, KEY, [body(args.kind, i, model, 8) for i in range(2)])
    res: dict = {name: {} for name in servers}
    for c in args.concurrency:
        rounds: dict = {name: [] for name in servers}
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                url, model = servers[name]
                bodies = [body(args.kind, r * c + i, model, args.max_tokens) for i in range(c)]
                rounds[name].append(await remote.run_load(url, KEY, bodies))
        for name in servers:
            res[name][str(c)] = s = median_summary(rounds[name])
            print(
                f"  {name:9} C={c:<3} {s['tok_s']:7.1f} tok/s  ttft p50 {s['ttft_p50_ms']:7.1f}"
                f" ms  itl p50 {s['itl_p50_ms']:6.1f} ms",
                flush=True,
            )
    return res


def plot(res: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, by_c in res.items():
        xs = sorted(int(c) for c in by_c)
        a.plot(xs, [by_c[str(x)]["tok_s"] for x in xs], marker="o", label=name)
        b.plot(xs, [by_c[str(x)]["ttft_p50_ms"] for x in xs], marker="o", label=name)
    for ax, label in ((a, "aggregate tokens/s (median)"), (b, "TTFT p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("toolwire vs llama.cpp server, same GGUF, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--kind", default="text", choices=["text", "tool"])
    p.add_argument("--dtype", default="auto")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads (-t)"
    )
    args = p.parse_args()
    args.model = model_source.EMBEDDED
    src = model_source.resolve(args.model)
    gguf = str(pathlib.Path(src.folder, src.gguf_file))
    llama_cpp.ensure_built()
    OUT.mkdir(exist_ok=True)
    port = free_port()
    peer = llama_cpp.start(gguf, port, max(args.concurrency), args.threads)
    stack = None
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", peer)
        stack, url, model = start_stack(args)
        servers = {
            "toolwire": (url, model),
            "llama.cpp": (f"http://127.0.0.1:{port}/v1", "embedded"),
        }
        res = asyncio.run(measure(servers, args))
    finally:
        for proc in (peer, stack):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    print("\n" + ratio_table(res, args.concurrency))
    (OUT / "peer.json").write_text(json.dumps(res, indent=2))
    plot(res, OUT / "peer.png")
    print(f"\nwrote {OUT / 'peer.json'} and {OUT / 'peer.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
