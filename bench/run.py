"""toolwire benchmark: streamed requests through the gateway vs the torch engine in-process.

    python -m bench.run                       # in-process and through the gateway, C = 1 and 8
    python -m bench.run --concurrency 1 4 16 32
    python -m bench.run --url http://host:port/v1 --model NAME   # any OpenAI-compatible server
    python -m bench.run --engine-only --model random:llama-8b --device cuda   # a GPU, no download
    python -m bench.run --model null --kinds text        # no forward pass: the serving path alone

Prints tables (medians over rounds) and writes bench/out/results.json and bench/out/bench.png.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time

from toolwire.stack.launcher import free_port, wait_for_health

from . import inprocess, proc_cpu, remote
from .workloads import body

OUT = pathlib.Path(__file__).resolve().parent / "out"
KEY = "bench-key"


def median_summary(rounds: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


async def sweep(run_one, kinds, concurrency, rounds, max_tokens, model) -> dict:
    results = {}
    for kind in kinds:
        for c in concurrency:
            per_round = []
            for r in range(rounds):
                bodies = [body(kind, r * c + i, model, max_tokens) for i in range(c)]
                per_round.append(await run_one(bodies))
            results[f"{kind}/{c}"] = median_summary(per_round)
            s = results[f"{kind}/{c}"]
            print(
                f"  {kind:4} C={c:<3} {s['tok_s']:7.1f} tok/s  ttft p50 {s['ttft_p50_ms']:7.1f} ms"
                f"  itl p50 {s['itl_p50_ms']:6.1f} ms",
                flush=True,
            )
    return results


def with_cpu(run_one, read_cpu, read_switches=None):
    """Wrap a load so its result also holds µs of CPU per token for each process measured
    (and, given read_switches, its context switches per token)."""

    async def run(bodies):
        before = read_cpu()
        switches = read_switches() if read_switches else {}
        res = await run_one(bodies)
        after = read_cpu()
        tokens = max(1, res["tokens"])
        for name in before:
            res[f"cpu_us_{name}"] = 1e6 * (after[name] - before[name]) / tokens
        if read_switches:
            now = read_switches()
            for name in switches:
                res[f"cs_{name}"] = (now[name] - switches[name]) / tokens
        return res

    return run


async def bench_inprocess(args) -> tuple[dict, dict]:
    # The engine in-process runs as the decode service runs it (toolwire/stack/cli.py): passive
    # OpenMP threads, set before torch loads. Else the baseline spins where the service sleeps.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    engine = await inprocess.make_engine(args)
    renderer = inprocess.make_renderer(engine)
    warm = [body("tool", i, "m", 8) for i in range(2)]
    await inprocess.run_load(engine, renderer, warm)
    engine.stats.__init__()
    compiles_before = engine.compiler.compiles
    print(f"in-process {engine.info.name} engine:", flush=True)
    load = with_cpu(
        lambda b: inprocess.run_load(engine, renderer, b),
        lambda: {"in-process": time.process_time()},
    )
    res = await sweep(load, args.kinds, args.concurrency, args.rounds, args.max_tokens, "m")
    cost = inprocess.constraint_cost(engine)
    cost.compiles -= compiles_before
    await engine.stop()
    gc.collect()
    return res, vars(cost)


def start_stack(args, flags: list[str] | None = None) -> tuple[subprocess.Popen, str, str]:
    """`toolwire up` for the load: (process, base URL, served model id)."""
    port = free_port()
    cmd = [
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
        "--dtype",
        args.dtype,
        "--max-batch",
        str(max(args.concurrency)),
        *getattr(args, "stack_flags", []),
        *(["--threads", str(args.threads)] if getattr(args, "threads", None) else []),
        *(["--kv-type", args.kv_type] if getattr(args, "kv_type", None) else []),
    ] + (flags or [])
    proc = subprocess.Popen(
        cmd,
        env=dict(os.environ, TOOLWIRE_API_KEYS=KEY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        health = wait_for_health(f"http://127.0.0.1:{port}/health", proc)
    except RuntimeError as e:
        proc.kill()
        raise SystemExit(str(e)) from None
    return proc, f"http://127.0.0.1:{port}/v1", health["models"][0]


async def bench_remote(
    args, base_url: str, api_key: str, model: str, label: str, up_pid: int | None = None
) -> dict:
    await remote.run_load(base_url, api_key, [body("tool", i, model, 8) for i in range(2)])
    print(f"{label}:", flush=True)
    run_load = remote.run_load_lean if args.client == "epoll" else remote.run_load
    load = lambda b: run_load(base_url, api_key, b)  # noqa: E731
    if up_pid is not None:
        pids = proc_cpu.service_pids(up_pid)
        load = with_cpu(
            load, lambda: proc_cpu.cpu_seconds(pids), lambda: proc_cpu.context_switches(pids)
        )
    return await sweep(load, args.kinds, args.concurrency, args.rounds, args.max_tokens, model)


def gateway_variants(compare: bool, compare_extractor: bool = False) -> dict[str, list[str]]:
    """The gateways to measure, in this order in one run. --compare-mux: the per-request
    decode calls first (the earlier path), then the multiplexed stream, each with h11, then
    with httptools where it is installed. --compare-extractor-mux: the per-request Extract
    calls, then the multiplexed ExtractStream (decode mux on both times)."""
    if compare_extractor:
        return {
            "gateway (extractor mux off)": ["--extractor-mux", "off"],
            "gateway (extractor mux on)": ["--extractor-mux", "on"],
        }
    if not compare:
        return {"gateway": []}
    out = {
        "gateway (mux off, h11)": ["--decode-mux", "off", "--http-parser", "h11"],
        "gateway (mux on, h11)": ["--decode-mux", "on", "--http-parser", "h11"],
    }
    try:
        import httptools  # noqa: F401
    except ImportError:
        return out
    out["gateway (mux on, httptools)"] = ["--decode-mux", "on", "--http-parser", "httptools"]
    return out


def table(inproc: dict, over: dict, label: str) -> str:
    head = (
        f"| workload | C | engine tok/s | {label} tok/s | ratio | TTFT p50 engine | "
        f"TTFT p50 {label} | added | ITL p50 / p95 {label} |"
    )
    lines = [head, "|" + "---|" * 9]
    for key in over:
        kind, c = key.split("/")
        a, b = inproc.get(key), over[key]
        ratio = f"{b['tok_s'] / a['tok_s']:.2f}" if a else "-"
        ta = f"{a['ttft_p50_ms']:.1f} ms" if a else "-"
        added = f"{b['ttft_p50_ms'] - a['ttft_p50_ms']:+.1f} ms" if a else "-"
        lines.append(f"| {kind} | {c} | {a['tok_s']:.1f} |" if a else f"| {kind} | {c} | - |")
        lines[-1] += (
            f" {b['tok_s']:.1f} | {ratio} | {ta} | {b['ttft_p50_ms']:.1f} ms | {added} |"
            f" {b['itl_p50_ms']:.1f} / {b['itl_p95_ms']:.1f} ms |"
        )
    return "\n".join(lines)


def _per_service_table(names: list[str], over: dict, row_of, fmt: str) -> str:
    """One row per workload and concurrency of `over`, one column per name; row_of(key, result)
    gives the row's values (None prints as -)."""
    lines = ["| workload | C | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    for key, b in over.items():
        kind, c = key.split("/")
        row = row_of(key, b)
        lines.append(
            f"| {kind} | {c} | "
            + " | ".join("-" if v is None else f"{v:{fmt}}" for v in row)
            + " |"
        )
    return "\n".join(lines)


def cpu_table(inproc: dict, over: dict) -> str:
    """µs of CPU per streamed token: each service through the gateway, and the engine alone
    (in-process, its bench harness included) for the decode service to be read against."""
    return _per_service_table(
        ["in-process"] + list(proc_cpu.SERVICES),
        over,
        lambda key, b: (
            [inproc.get(key, {}).get("cpu_us_in-process")]
            + [b.get(f"cpu_us_{n}") for n in proc_cpu.SERVICES]
        ),
        ".0f",
    )


def switch_table(over: dict) -> str:
    """Context switches per streamed token of each service, its long-lived threads together
    (bench/proc_cpu.context_switches)."""
    return _per_service_table(
        list(proc_cpu.SERVICES),
        over,
        lambda key, b: [b.get(f"cs_{n}") for n in proc_cpu.SERVICES],
        ".1f",
    )


def plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, res in results.items():
        for kind in sorted({k.split("/")[0] for k in res}):
            xs = sorted(int(k.split("/")[1]) for k in res if k.startswith(kind + "/"))
            ax.plot(
                xs, [res[f"{kind}/{x}"]["tok_s"] for x in xs], marker="o", label=f"{label}, {kind}"
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("aggregate tokens/s (median)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--kinds", nargs="+", default=["tool", "text"], choices=["tool", "text"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--model", default="embedded")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="cpu", help="cpu or cuda (engine in-process)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of an engine step, in-process and in the stack's decode service",
    )
    p.add_argument(
        "--kv-type",
        choices=["q8_0", "f16"],
        help="the ggml step's KV cache type, in-process and in the stack's decode service",
    )
    p.add_argument(
        "--engine-only",
        action="store_true",
        help="only the in-process engine (e.g. random:<preset> weights on a GPU)",
    )
    p.add_argument(
        "--compare-mux",
        action="store_true",
        help="measure the gateway with --decode-mux off, then on (h11, then httptools)",
    )
    p.add_argument(
        "--compare-extractor-mux",
        action="store_true",
        help="measure the gateway with --extractor-mux off, then on",
    )
    p.add_argument(
        "--client",
        default="httpx",
        choices=["httpx", "epoll"],
        help="the load's HTTP client: httpx (every event parsed as JSON) or epoll "
        "(bench/sse_counter.py: events counted in the bytes, text only; on a 2-core machine "
        "the client's CPU is taken from the services measured)",
    )
    p.add_argument(
        "--stack-flag",
        dest="stack_flags",
        action="append",
        default=[],
        help="passed to toolwire up, e.g. --stack-flag=--stream-interval=4",
    )
    p.add_argument("--url", help="measure this OpenAI-compatible server instead")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", KEY))
    args = p.parse_args()
    if args.client == "epoll" and "tool" in args.kinds:
        p.error("--client epoll counts text deltas only: use it with --kinds text")
    OUT.mkdir(exist_ok=True)
    results: dict = {}
    if args.url:
        results["server"] = asyncio.run(
            bench_remote(args, args.url, args.api_key, args.model, args.url)
        )
        print(table({}, results["server"], "server"))
    else:
        results["engine"], cost = asyncio.run(bench_inprocess(args))
        results["constraint"] = cost
        if args.engine_only:
            print(
                f"\nconstraint cost: mask {cost['mask_ms']:.2f} ms per decode step against "
                f"{cost['forward_ms']:.1f} ms forward"
            )
            (OUT / "results.json").write_text(json.dumps(results, indent=2))
            plot({"engine": results["engine"]}, OUT / "bench.png")
            return 0
        variants = gateway_variants(args.compare_mux, args.compare_extractor_mux)
        for label, flags in variants.items():
            proc, url, model = start_stack(args, flags)
            try:
                results[label] = asyncio.run(bench_remote(args, url, KEY, model, label, proc.pid))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        for label in variants:
            print("\n" + table(results["engine"], results[label], label))
            print("\n" + cpu_table(results["engine"], results[label]))
            print("\ncontext switches per token\n" + switch_table(results[label]))
        share = 100 * cost["mask_ms"] / cost["forward_ms"] if cost["forward_ms"] else 0.0
        print(
            f"\nconstraint cost: mask {cost['mask_ms']:.2f} ms per decode step against "
            f"{cost['forward_ms']:.1f} ms forward ({share:.1f}%)"
            f"; grammar compiles during the sweep: {cost['compiles']}"
        )
        results["constraint"] = cost
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    plot({k: v for k, v in results.items() if k != "constraint"}, OUT / "bench.png")
    print(f"\nwrote {OUT / 'results.json'} and {OUT / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
