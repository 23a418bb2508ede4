"""toolwire benchmark: streamed requests through the gateway vs the torch engine in-process.

    python -m bench.run                       # in-process and through the gateway, C = 1 and 8
    python -m bench.run --concurrency 1 4 16 32
    python -m bench.run --url http://host:port/v1 --model NAME   # any OpenAI-compatible server
    python -m bench.run --engine-only --model random:llama-8b --device cuda   # a GPU, no download
    python -m bench.run --model null --kinds text        # no forward pass: the serving path alone
    python -m bench.run --model random:tiny --kinds text --concurrency 1 16 64 --baseline main~3
        # that commit's stack and this tree's, taking turns in one run (bench/baseline.py)

Prints tables (medians over rounds) and writes bench/out/results.json and bench/out/bench.png.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pathlib
import shlex
import signal
import statistics
import subprocess
import sys
import time

from toolwire.stack.launcher import free_port, wait_for_health

from . import baseline, inprocess, proc_cpu, remote
from .workloads import body

OUT = pathlib.Path(__file__).resolve().parent / "out"
KEY = "bench-key"
META = ("constraint", "baseline_commit")  # results.json keys that hold no sweep


def median_summary(rounds: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


async def sweep(loads: dict, kinds, concurrency, rounds, max_tokens) -> dict[str, dict]:
    """Each load (label -> (run_one, served model)) at every workload and concurrency, `rounds`
    times: {label: {"kind/C": medians}}. Several loads take turns within each round, the first
    of them changing from round to round, so a slow spell of a shared machine falls on all of
    them alike instead of on whichever ran in it."""
    labels = list(loads)
    results: dict[str, dict] = {label: {} for label in labels}
    width = max(len(label) for label in labels)
    for kind in kinds:
        for c in concurrency:
            per_round: dict[str, list] = {label: [] for label in labels}
            for r in range(rounds):
                for label in labels if r % 2 == 0 else labels[::-1]:
                    run_one, model = loads[label]
                    bodies = [body(kind, r * c + i, model, max_tokens) for i in range(c)]
                    per_round[label].append(await run_one(bodies))
            for label in labels:
                s = results[label][f"{kind}/{c}"] = median_summary(per_round[label])
                who = f"{label:<{width}}  " if len(labels) > 1 else ""
                print(
                    f"  {kind:4} C={c:<3} {who}{s['tok_s']:7.1f} tok/s"
                    f"  ttft p50 {s['ttft_p50_ms']:7.1f} ms  itl p50 {s['itl_p50_ms']:6.1f} ms",
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
    loads = {"engine": (load, "m")}
    res = (await sweep(loads, args.kinds, args.concurrency, args.rounds, args.max_tokens))["engine"]
    cost = inprocess.constraint_cost(engine)
    cost.compiles -= compiles_before
    await engine.stop()
    gc.collect()
    return res, vars(cost)


def start_stack(args, tree: baseline.Tree | None = None) -> tuple[subprocess.Popen, str, str]:
    """`toolwire up` for the load: (process, base URL, served model id). The current tree's,
    or (tree) an older commit's, on the same python with the same flags."""
    port = free_port()
    up_args = [
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
    ]
    cmd = baseline.up_command(up_args)
    proc = subprocess.Popen(
        cmd,
        cwd=None if tree is None else tree.path,
        env=dict(os.environ if tree is None else tree.env(), TOOLWIRE_API_KEYS=KEY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        health = wait_for_health(f"http://127.0.0.1:{port}/health", proc)
    except RuntimeError as e:
        proc.kill()
        where = f" (in {tree.path}, PYTHONPATH={tree.path})" if tree else ""
        raise SystemExit(f"{e}; `{shlex.join(cmd)}`{where} shows why") from None
    return proc, f"http://127.0.0.1:{port}/v1", health["models"][0]


def stop_stack(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def decode_library(up_pid: int) -> str | None:
    """The llama.cpp library the stack's decode process has mapped (None: none, the torch
    step), read from /proc: an older commit might look for the cached build under another
    key and run the wheel's library, which would be measured as the change."""
    pid = proc_cpu.service_pids(up_pid).get("decode")
    try:
        maps = pathlib.Path(f"/proc/{pid}/maps").read_text() if pid else ""
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)  # address, perms, offset, device, inode[, path]
        if len(fields) == 6 and pathlib.Path(fields[5]).name.startswith(("libllama", "xllamacpp")):
            return fields[5]
    return None


async def remote_load(args, base_url: str, api_key: str, model: str, up_pid: int | None = None):
    """The load on one server, warmed (a stream at each kind), with the CPU and context
    switches of its services per token where up_pid is the `toolwire up` serving it."""
    await remote.run_load(base_url, api_key, [body("tool", i, model, 8) for i in range(2)])
    run_load = remote.run_load_lean if args.client == "epoll" else remote.run_load
    load = lambda b: run_load(base_url, api_key, b)  # noqa: E731
    if up_pid is not None:
        pids = proc_cpu.service_pids(up_pid)
        load = with_cpu(
            load, lambda: proc_cpu.cpu_seconds(pids), lambda: proc_cpu.context_switches(pids)
        )
    return load


async def bench_remote(args, servers: dict) -> dict[str, dict]:
    """servers: label -> (base URL, API key, served model, `toolwire up` pid or None), measured
    taking turns (sweep)."""
    loads = {}
    for label, (url, key, model, pid) in servers.items():
        loads[label] = (await remote_load(args, url, key, model, pid), model)
    print(" and ".join(servers) + (", taking turns:" if len(servers) > 1 else ":"), flush=True)
    return await sweep(loads, args.kinds, args.concurrency, args.rounds, args.max_tokens)


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


def _serving_us(res: dict) -> float | None:
    """µs of CPU per token of every service but decode: the path tokens take after the step."""
    parts = [res.get(f"cpu_us_{n}") for n in proc_cpu.SERVICES if n != "decode"]
    return None if any(v is None for v in parts) else sum(parts)


def comparison_table(base: dict, cur: dict, base_label: str, cur_label: str = "current") -> str:
    """The two stacks of a --baseline run side by side: tok/s and its ratio, and CPU per token
    of the serving path (every service but decode) and of decode, apart: a change to the
    gateway or extractor shows in the first, while a slower decode step moves tok/s alone."""
    cols = [
        f"tok/s {base_label}",
        f"tok/s {cur_label}",
        "ratio current / baseline",
        f"serving µs/token {base_label}",
        f"serving µs/token {cur_label}",
        f"decode µs/token {base_label}",
        f"decode µs/token {cur_label}",
    ]
    lines = ["| workload | C | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    num = lambda v, fmt: "-" if v is None else f"{v:{fmt}}"  # noqa: E731
    for key in [*cur, *(k for k in base if k not in cur)]:
        kind, c = key.split("/")
        b, n = base.get(key, {}), cur.get(key, {})
        ratio = n["tok_s"] / b["tok_s"] if b.get("tok_s") and "tok_s" in n else None
        row = [
            num(b.get("tok_s"), ".1f"),
            num(n.get("tok_s"), ".1f"),
            num(ratio, ".2f"),
            num(_serving_us(b) if b else None, ".0f"),
            num(_serving_us(n) if n else None, ".0f"),
            num(b.get("cpu_us_decode"), ".0f"),
            num(n.get("cpu_us_decode"), ".0f"),
        ]
        lines.append(f"| {kind} | {c} | " + " | ".join(row) + " |")
    return "\n".join(lines)


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
        "--baseline",
        metavar="REF",
        help="also measure the stack of this git ref or commit (a worktree of it, "
        "bench/baseline.py), taking turns with the current tree's in every round",
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
    if args.baseline and (args.url or args.engine_only):
        p.error("--baseline measures two toolwire stacks: not with --url or --engine-only")
    trees: dict[str, baseline.Tree | None] = {"gateway": None}
    if args.baseline:
        base_tree, found = baseline.prepare(args.baseline)
        print(
            f"baseline {args.baseline} = {base_tree.sha}: {base_tree.path}\n  its stack imports "
            + ", ".join(f"{n} from {pathlib.Path(f).parent}" for n, f in found.items()),
            flush=True,
        )
        trees = {f"baseline ({base_tree.short})": base_tree, "current": None}
    OUT.mkdir(exist_ok=True)
    results: dict = {}
    if args.url:
        servers = {"server": (args.url, args.api_key, args.model, None)}
        results.update(asyncio.run(bench_remote(args, servers)))
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
        # With --baseline both stacks stay up through the sweep, taking turns: an idle stack's
        # pollers take little CPU, and each is measured with the other idle beside it.
        stacks: dict[str, subprocess.Popen] = {}
        try:
            servers = {}
            for label, tree in trees.items():
                proc, url, model = start_stack(args, tree)
                stacks[label] = proc
                servers[label] = (url, KEY, model, proc.pid)
                if tree is not None:
                    pids = {"up": proc.pid, **proc_cpu.service_pids(proc.pid)}
                    baseline.check_processes(tree, pids)
            libraries = {label: decode_library(proc.pid) for label, proc in stacks.items()}
            for label, lib in libraries.items():
                print(f"{label}: decode maps {lib or 'no llama.cpp library (the torch step)'}")
            if len(set(libraries.values())) > 1:
                print(
                    "  the decode services run different llama.cpp libraries: the comparison "
                    "measures that too (TOOLWIRE_LLAMA_LIB=<path> names one for both)"
                )
            results.update(asyncio.run(bench_remote(args, servers)))
        finally:
            for proc in stacks.values():
                stop_stack(proc)
        for label in trees:
            print(f"\n{label}:" if len(trees) > 1 else "")
            print(table(results["engine"], results[label], label))
            print("\n" + cpu_table(results["engine"], results[label]))
            print("\ncontext switches per token\n" + switch_table(results[label]))
        if args.baseline:
            base_label, cur_label = trees
            print(
                f"\n{cur_label} against {base_label}: tok/s, and µs of CPU per token\n"
                + comparison_table(results[base_label], results[cur_label], base_label)
            )
            results["baseline_commit"] = {"ref": args.baseline, "sha": base_tree.sha}
        share = 100 * cost["mask_ms"] / cost["forward_ms"] if cost["forward_ms"] else 0.0
        print(
            f"\nconstraint cost: mask {cost['mask_ms']:.2f} ms per decode step against "
            f"{cost['forward_ms']:.1f} ms forward ({share:.1f}%)"
            f"; grammar compiles during the sweep: {cost['compiles']}"
        )
        results["constraint"] = cost
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    plot({k: v for k, v in results.items() if k not in META}, OUT / "bench.png")
    print(f"\nwrote {OUT / 'results.json'} and {OUT / 'bench.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
