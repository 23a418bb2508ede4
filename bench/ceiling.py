"""The serving ceiling: `toolwire up --model null` (no forward pass), one gateway, one decode,
one extractor, N concurrent streams of M tokens, with the stream interval off and on.

    python -m bench.ceiling                        # 256 streams x 256 tokens, interval 0 and 4
    python -m bench.ceiling --streams 64 --variants 0 4 8 --rounds 3
    python -m bench.ceiling --variants 0@25.6 4@10.24   # engine steps paced (ms): 10k, 25k tok/s
    python -m bench.ceiling --variants 0@12.8 4@5.12    # 20k, 50k offered: room to show more

A variant is a stream interval in tokens (0: off), optionally @ the null engine's step time in
ms (`--null-step-ms`: 256 streams at 25.6 ms a step offer 10,000 tokens/s). Unpaced, the
engine steps once per event-loop turn and outruns the serving path, which then merges tokens
(tokens/event > 1); paced, tokens/event near 1 means every token got its own SSE event.

Prints, per variant (medians over rounds): streamed tokens/s, SSE events carrying content per
second, tokens per event, time to first token, and µs of CPU per streamed token of each
service process (bench/proc_cpu.py) and of this client.

The client is lean on purpose (bench/sse_counter.py: raw HTTP/1.1, content events counted in
the bytes instead of parsing each as JSON, one epoll loop over all the sockets): it shares the
2 cores with what it measures. `--client httpx` parses every event (bench/remote.py) to check
the lean client's counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
import urllib.parse

from . import proc_cpu, remote, sse_counter
from .run import KEY, start_stack
from .workloads import body


async def load(url: str, bodies: list[dict], client: str = "epoll") -> dict:
    u = urllib.parse.urlsplit(url)
    path = u.path.rstrip("/") + "/chat/completions"
    requests = [
        sse_counter.http_request(u.hostname, path, KEY, json.dumps(b).encode()) for b in bodies
    ]
    start = time.perf_counter()
    if client == "httpx":  # the full client: HTTP framing decoded, every event parsed as JSON
        r = await remote.run_load(url, KEY, bodies)
        tokens, events, ttft = r["tokens"], r["events"], r["ttft_p50_ms"]
    else:
        if client == "asyncio":
            results = await sse_counter.run_asyncio(u.hostname, u.port, requests)
        else:  # nothing else runs in this process meanwhile: one loop, blocking
            results = sse_counter.run_epoll(u.hostname, u.port, requests)
        tokens = sum(r[0] for r in results)
        events = sum(r[1] for r in results)
        ttft = 1000 * statistics.median(r[2] for r in results)
    wall = time.perf_counter() - start
    return {
        "tokens": tokens,
        "events": events,
        "wall_s": wall,
        "tok_s": tokens / wall,
        "events_s": events / wall,
        "tokens_per_event": tokens / max(1, events),
        "ttft_p50_ms": ttft,
    }


async def measure(url: str, model: str, pids: dict, args) -> dict:
    warm = [body("text", i, model, 8) for i in range(4)]
    await load(url, warm)
    rounds = []
    for r in range(args.rounds):
        bodies = [
            body("text", r * args.streams + i, model, args.max_tokens) for i in range(args.streams)
        ]
        before, mine = proc_cpu.cpu_seconds(pids), time.process_time()
        res = await load(url, bodies, args.client)
        after, mine = proc_cpu.cpu_seconds(pids), time.process_time() - mine
        for name in before:
            res[f"cpu_us_{name}"] = 1e6 * (after[name] - before[name]) / max(1, res["tokens"])
        res["cpu_us_client"] = 1e6 * mine / max(1, res["tokens"])
        rounds.append(res)
        print(
            f"    round {r}: {res['tok_s']:8.0f} tok/s, {res['events_s']:8.0f} events/s, "
            f"decode {res.get('cpu_us_decode', float('nan')):.1f} µs/token",
            flush=True,
        )
    return {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}


def table(results: dict) -> str:
    cols = ["gateway", "decode", "extractor", "template", "client"]
    lines = [
        "| variant | tok/s | content events/s | tokens/event | TTFT p50 | "
        + " | ".join(f"µs CPU/token {c}" for c in cols)
        + " |",
        "|" + "---|" * (5 + len(cols)),
    ]
    for label, r in results.items():
        lines.append(
            f"| {label} | {r['tok_s']:.0f} | {r['events_s']:.0f} | {r['tokens_per_event']:.2f} | "
            f"{r['ttft_p50_ms']:.0f} ms | "
            + " | ".join(f"{r.get(f'cpu_us_{c}', float('nan')):.1f}" for c in cols)
            + " |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--streams", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--variants", nargs="+", default=["0", "4"], help="INTERVAL[@STEP_MS]")
    p.add_argument("--model", default="null")
    p.add_argument(
        "--client",
        choices=["epoll", "asyncio", "httpx"],
        default="epoll",
        help="epoll, asyncio: content events counted in the bytes (bench/sse_counter.py); "
        "httpx: the full client (bench/remote.py, every event parsed as JSON), to check them",
    )
    p.add_argument("--stack-flag", action="append", default=[], help="passed to toolwire up")
    args = p.parse_args()
    args.dtype, args.concurrency, args.stack_flags = "auto", [args.streams], args.stack_flag
    results = {}
    for variant in args.variants:
        n, _, step = variant.partition("@")
        label = f"interval {n}" if int(n) > 1 else "interval off"
        label += f", step {step} ms" if step else ", unpaced"
        print(f"{label}:", flush=True)
        flags = ["--stream-interval", n, "--null-step-ms", step or "0"]
        proc, url, model = start_stack(args, flags)
        try:
            results[label] = asyncio.run(measure(url, model, proc_cpu.service_pids(proc.pid), args))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    print(f"\n{args.streams} streams x {args.max_tokens} tokens, model {args.model}:")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
