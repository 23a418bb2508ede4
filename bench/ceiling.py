"""The serving ceiling: `toolwire up --model null` (no forward pass), one gateway, one decode,
one extractor, N concurrent streams of M tokens, with the stream interval off and on.

    python -m bench.ceiling                        # 256 streams x 256 tokens, interval 0 and 4
    python -m bench.ceiling --streams 64 --variants 0 4 8 --rounds 3
    python -m bench.ceiling --variants 0@25.6 4@10.24   # engine steps paced (ms): 10k, 25k tok/s

A variant is a stream interval in tokens (0: off), optionally @ the null engine's step time in
ms (`--null-step-ms`: 256 streams at 25.6 ms a step offer 10,000 tokens/s). Unpaced, the
engine steps once per event-loop turn and outruns the serving path, which then merges tokens
(tokens/event > 1); paced, tokens/event near 1 means every token got its own SSE event.

Prints, per variant (medians over rounds): streamed tokens/s, SSE events carrying content per
second, tokens per event, time to first token, and µs of CPU per streamed token of each
service process (bench/proc_cpu.py) and of this client.

The client is lean on purpose (raw HTTP/1.1 over asyncio streams, counting `data:` events in
the bytes instead of parsing each as JSON): with httpx and a json.loads per event the client
took more CPU than the gateway on this 2-core machine and capped what was measured.
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

from . import proc_cpu
from .run import KEY, start_stack
from .workloads import body

CONTENT = b'"content":"'  # a delta with text (the role chunk has "content":null)


async def one_stream(host: str, port: int, path: str, payload: bytes) -> tuple[int, int, float]:
    """(completion tokens, content events, seconds to the first content event) of one request."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        + payload
    )
    events, first, tail = 0, None, b""
    while True:
        data = await reader.read(65536)
        if not data:
            break
        seen = tail + data
        n = seen.count(CONTENT) - tail.count(CONTENT)
        if n and first is None:
            first = time.perf_counter() - start
        events += n
        tail = seen[-4096:]  # the usage chunk is read from here at the end
    writer.close()
    at = tail.rfind(b'"completion_tokens":')
    tokens = int(tail[at + 20 :].split(b",", 1)[0].split(b"}", 1)[0]) if at >= 0 else 0
    return tokens, events, first if first is not None else float("nan")


async def load(url: str, bodies: list[dict]) -> dict:
    u = urllib.parse.urlsplit(url)
    path = u.path.rstrip("/") + "/chat/completions"
    payloads = [json.dumps(b).encode() for b in bodies]
    start = time.perf_counter()
    results = await asyncio.gather(*(one_stream(u.hostname, u.port, path, p) for p in payloads))
    wall = time.perf_counter() - start
    tokens = sum(r[0] for r in results)
    events = sum(r[1] for r in results)
    return {
        "tokens": tokens,
        "events": events,
        "wall_s": wall,
        "tok_s": tokens / wall,
        "events_s": events / wall,
        "tokens_per_event": tokens / max(1, events),
        "ttft_p50_ms": 1000 * statistics.median(r[2] for r in results),
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
        res = await load(url, bodies)
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
