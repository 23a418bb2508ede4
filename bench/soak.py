"""A bounded soak: many streams for minutes through `toolwire up` on loopback.

    python -m bench.soak                          # 64 streams for 5 minutes, embedded model
    python -m bench.soak --streams 16 --duration 60

Each stream sends request after request (tool calls and prose, alternating) until the time is up.
Reports errors by kind, latency percentiles, and each process's resident memory after warm-up,
a minute in, and at the end (growth after the first minute is what a leak looks like); writes
bench/results/soak-<streams>x<duration>s.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import httpx

from toolwire.stack.launcher import child_pids, free_port, wait_for_health

from .measure import pct
from .proc_cpu import service_pids
from .workloads import body

KEY = "soak-key"
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def rss_mb(pid: int) -> float:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def processes(up: int) -> dict[str, int]:
    """The services of a `toolwire up`, and the template's grammar workers."""
    pids = service_pids(up)
    if "template" in pids:
        workers = 0
        for pid in sorted(child_pids(pids["template"])):
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"compile_worker" in cmdline or b"spawn_main" in cmdline:  # now, or before
                pids[f"grammar worker {workers}"] = pid
                workers += 1
            elif b"resource_tracker" in cmdline:  # multiprocessing's, for the workers
                pids["grammar workers' resource tracker"] = pid
    return pids


async def one(http: httpx.AsyncClient, req: dict) -> dict:
    """One streamed request: its timings, tokens and how it ended."""
    t0 = time.perf_counter()
    first = None
    tokens, outcome = 0, "ok"
    try:
        async with http.stream("POST", "/chat/completions", json=req) as r:
            if r.status_code != 200:
                await r.aread()
                return {"outcome": f"http {r.status_code}", "e2e": time.perf_counter() - t0}
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    outcome = f"stream error {chunk['error'].get('code')}"
                    break
                first = first or time.perf_counter()
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as e:
        outcome = f"transport {type(e).__name__}"
    done = time.perf_counter()
    return {
        "outcome": outcome,
        "e2e": done - t0,
        "ttft": first - t0 if first else None,
        "tokens": tokens,
    }


async def soak(
    base_url: str, model: str, streams: int, duration: float, max_tokens: int, on_minute
) -> list[dict]:
    results: list[dict] = []
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=600, limits=limits, headers={"Authorization": f"Bearer {KEY}"}
    ) as http:

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                kind = "tool" if (w + i) % 2 else "text"
                results.append(await one(http, body(kind, w * 1000 + i, model, max_tokens)))
                i += 1

        async def minute() -> None:
            await asyncio.sleep(min(60, duration / 2))
            on_minute()

        await asyncio.gather(minute(), *(worker(w) for w in range(streams)))
    return results


def report(results: list[dict], wall: float, rss: dict[str, list[float]]) -> dict:
    ok = [r for r in results if r["outcome"] == "ok"]
    outcomes = collections.Counter(r["outcome"] for r in results)
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    e2e = [r["e2e"] for r in ok]
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "outcomes": dict(outcomes),
        "tokens_per_s": sum(r["tokens"] for r in ok) / wall,
        **{f"ttft_p{q}_ms": 1000 * pct(ttft, q / 100) for q in (50, 95, 99)},
        **{f"e2e_p{q}_ms": 1000 * pct(e2e, q / 100) for q in (50, 95, 99)},
        "rss_mb": {
            name: {"after_warmup": v[0], "after_1_min": v[1], "end": v[2]}
            for name, v in rss.items()
        },
    }


def print_report(rep: dict, args) -> None:
    print(
        f"\n{args.streams} streams, {args.duration:.0f} s, max_tokens {args.max_tokens}: "
        f"{rep['requests']} requests, {rep['errors']} errors {rep['outcomes']}, "
        f"{rep['tokens_per_s']:.1f} tok/s"
    )
    print(
        f"TTFT p50/p95/p99 {rep['ttft_p50_ms']:.0f} / {rep['ttft_p95_ms']:.0f} / "
        f"{rep['ttft_p99_ms']:.0f} ms; end to end {rep['e2e_p50_ms']:.0f} / "
        f"{rep['e2e_p95_ms']:.0f} / {rep['e2e_p99_ms']:.0f} ms"
    )
    print("\n| process | RSS after warm-up | after 1 min | end | growth after 1 min |")
    print("|---|---|---|---|---|")
    for name, v in rep["rss_mb"].items():
        print(
            f"| {name} | {v['after_warmup']:.0f} MB | {v['after_1_min']:.0f} MB | "
            f"{v['end']:.0f} MB | {v['end'] - v['after_1_min']:+.1f} MB |"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--duration", type=float, default=300)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model", default="embedded")
    args = p.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolwire.stack.cli",
            "up",
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
            "--model",
            args.model,
        ],
        env=dict(os.environ, TOOLWIRE_API_KEYS=KEY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        model = wait_for_health(f"http://127.0.0.1:{port}/health", proc)["models"][0]
        base_url = f"http://127.0.0.1:{port}/v1"
        # Warm-up: one request of each kind, so first-use allocations are not counted as growth.
        asyncio.run(soak(base_url, model, 2, 1, args.max_tokens, lambda: None))
        pids = processes(proc.pid)
        rss = {name: [rss_mb(pid)] for name, pid in pids.items()}

        def sample() -> None:
            for name, pid in pids.items():
                rss[name].append(rss_mb(pid))

        t0 = time.perf_counter()
        results = asyncio.run(
            soak(base_url, model, args.streams, args.duration, args.max_tokens, sample)
        )
        wall = time.perf_counter() - t0
        sample()
        rep = report(results, wall, rss)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print_report(rep, args)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"soak-{args.streams}x{args.duration:.0f}s.json"
    out.write_text(json.dumps({"args": vars(args), **rep}, indent=1))
    print(f"\nwrote {out}")
    return 0 if rep["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
