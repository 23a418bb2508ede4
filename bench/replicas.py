"""Decode replicas behind one gateway: throughput of N replicas against one, same load, same run.

    python -m bench.replicas                       # 1 and 3 replicas, embedded model
    python -m bench.replicas --replicas 1 2 3 --concurrency 16 --model random:tiny

Each configuration is a fresh `toolwire up --decode-replicas N`; streams of prose at each
concurrency, medians over rounds. Writes bench/results/replicas-<model>.json.
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

import httpx

from toolwire.stack.launcher import free_port, wait_for_health

from .remote import run_load
from .workloads import body

KEY = "bench-key"
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def start(
    model: str, replicas: int, max_batch: int, threads: int | None = None
) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolwire.stack.cli",
            "up",
            "--model",
            model,
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--decode-replicas",
            str(replicas),
            "--max-batch",
            str(max_batch),
            *(["--threads", str(threads)] if threads else []),
        ],
        env=dict(os.environ, TOOLWIRE_API_KEYS=KEY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    health = wait_for_health(f"{base}/health", proc)
    while httpx.get(f"{base}/health").json().get("decode_replicas_serving") != replicas:
        time.sleep(0.5)
    return proc, f"{base}/v1", health["models"][0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    p.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="each replica's step threads (default: toolwire up splits the CPUs between them)",
    )
    p.add_argument("--out", default=None, help="results file name (default replicas-<model>)")
    args = p.parse_args()
    results: dict = {}
    for n in args.replicas:
        proc, base_url, model = start(args.model, n, max(args.concurrency), args.threads)
        try:
            asyncio.run(run_load(base_url, KEY, [body("text", 0, model, 8)]))  # warm-up
            for c in args.concurrency:
                rounds = [
                    asyncio.run(
                        run_load(
                            base_url,
                            KEY,
                            [body("text", r * c + i, model, args.max_tokens) for i in range(c)],
                        )
                    )
                    for r in range(args.rounds)
                ]
                results[f"{n}/{c}"] = {
                    k: statistics.median(r[k] for r in rounds) for k in rounds[0]
                }
                s = results[f"{n}/{c}"]
                print(
                    f"replicas={n} C={c:<3} {s['tok_s']:7.1f} tok/s  ttft p50 "
                    f"{s['ttft_p50_ms']:7.1f} ms  itl p50 {s['itl_p50_ms']:6.1f} ms",
                    flush=True,
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    one = args.replicas[0]
    print(f"\n| replicas | C | tok/s | vs {one} replica(s) | TTFT p50 | ITL p50 |")
    print("|---|---|---|---|---|---|")
    for key, s in results.items():
        n, c = key.split("/")
        base = results[f"{one}/{c}"]["tok_s"]
        print(
            f"| {n} | {c} | {s['tok_s']:.1f} | {s['tok_s'] / base:.2f} | "
            f"{s['ttft_p50_ms']:.0f} ms | {s['itl_p50_ms']:.1f} ms |"
        )
    RESULTS.mkdir(exist_ok=True)
    name = args.model.replace(":", "-").replace("/", "_")
    (RESULTS / (args.out or f"replicas-{name}.json")).write_text(
        json.dumps({"args": vars(args), "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
