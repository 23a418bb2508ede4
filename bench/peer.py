"""toolwire against the llama.cpp server on the same GGUF, the same streamed load, levels
alternated so both see the same machine state; one table of ratios and a plot.

    python -m bench.peer                                 # C = 1, 4, 16; 3 rounds; 64 tokens
    python -m bench.peer --concurrency 1 16 --rounds 5
    python -m bench.peer --kinds text tool agent --variants off on --concurrency 1 4

Workloads (bench/workloads.py): `text` prose; `tool` one strict tool under tool_choice
required, the same tools block each request; `agent` the multi-turn agent (round r is turn r of
each stream's conversation: the previous request plus the assistant's call, a tool result and
a new user line); `after` the answer after a tool result (bench.tool_rounds' rounds, tool_choice
none), where speculation has the most to copy. `--speculation auto off` runs toolwire with and
without its prompt-lookup drafts; `--peer-spec none ngram-mod` runs llama-server once per
`--spec-type` (none: its default). `--variants off on` runs toolwire twice in the same run: `off` with prefix
reuse and jump-forward switched off (--no-prefix-reuse --no-jump-forward), `on` as shipped.
`--steps ggml torch` runs toolwire once per decode step backend (--step), in the same run;
`--kv-types q8_0 f16` once per KV cache type of the ggml step (--kv-type).
`--baseline REF` runs that commit's toolwire too (bench/baseline.py: a worktree on this venv),
as shipped then, taking turns with the others in every round.

llama-server is built once into ~/.cache/toolwire/llama.cpp (bench/llama_cpp.py) or taken from
TOOLWIRE_LLAMA_SERVER. It reads bench/peer_hermes.jinja (SmolLM2's template with toolwire's tools
block: the same prompt as toolwire's; SmolLM2's own renders no tools), and the table counts the
requests that streamed a call. Its chat route writes prose under tool_choice required, so its tool
and agent requests go as grammar-constrained completions (bench/peer_grammar.py; `--peer-tool chat`
for the chat route). Both servers run for the whole bench; only one is loaded at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import pathlib
import sys

from toolwire.runtime import model_source

from . import baseline, llama_cpp, peer_grammar, remote
from .run import KEY, OUT, median_summary, start_stack, stop_stack
from .workloads import body


def ratio_table(res: dict, levels: list[int], kinds: list[str] | None = None) -> str:
    """One row per workload, streams and server; the ratios are against llama.cpp where it ran,
    else against the first server: of tokens/s, and of requests/s (a tool call's work is the
    call: toolwire forces the envelope and name by jump-forward, llama.cpp samples them)."""
    names = list(res)
    base = "llama.cpp" if "llama.cpp" in res else names[0]
    lines = [
        "| workload | streams | server | tok/s | ratio | req/s | ratio | TTFT p50 | latency p50"
        " | ITL p50 | cached / prompt | calls / requests |",
        "|" + "---|" * 12,
    ]
    for kind in kinds or ["text"]:
        for c in levels:
            key = f"{kind}/{c}" if kinds else str(c)
            b = res[base][key]
            for name in names:
                t = res[name][key]
                lines.append(
                    f"| {kind} | {c} | {name} | {t['tok_s']:.1f} | {t['tok_s'] / b['tok_s']:.2f}"
                    f" | {t.get('req_s', 0):.2f} | {t.get('req_s', 0) / (b.get('req_s') or 1):.2f}"
                    f" | {t['ttft_p50_ms']:.0f} ms | {t.get('latency_p50_ms', float('nan')):.0f} ms"
                    f" | {t['itl_p50_ms']:.1f} ms"
                    f" | {t.get('cached_tokens', 0):.0f} / {t.get('prompt_tokens', 0):.0f}"
                    f" | {t.get('called', 0):.0f} / {t.get('requests', 0):.0f} |"
                )
    return "\n".join(lines)


async def measure(servers: dict, args) -> dict:
    for url, model in servers.values():  # warm every server (prose: no tools prefix cached)
        await remote.run_load(url, KEY, [body("text", i, model, 8) for i in range(2)])
        if "after" in args.kinds:  # each round's tools once: toolwire's compiles are cached
            await remote.run_load(url, KEY, [body("after", i, model, 8) for i in range(6)])
    res: dict = {name: {} for name in servers}
    for kind in args.kinds:
        for c in args.concurrency:
            rounds: dict = {name: [] for name in servers}
            for r in range(args.rounds):
                order = list(servers) if r % 2 == 0 else list(reversed(servers))
                for name in order:
                    url, model = servers[name]
                    bodies = [
                        body(kind, r * c + i, model, args.max_tokens, turn=r, stream=i)
                        for i in range(c)
                    ]
                    peer = name.startswith("llama.cpp")
                    if peer and kind in ("tool", "agent") and args.peer_tool == "grammar":
                        root = url.removesuffix("/v1")
                        bodies = await peer_grammar.completion_bodies(root, bodies)
                        rounds[name].append(await peer_grammar.run_load(root, bodies))
                    else:
                        rounds[name].append(await remote.run_load(url, KEY, bodies))
            for name in servers:
                res[name][f"{kind}/{c}"] = s = median_summary(rounds[name])
                s["rounds"] = rounds[name]  # per round: the agent's turns, one by one
                print(
                    f"  {name:12} {kind:5} C={c:<3} {s['tok_s']:7.1f} tok/s  ttft p50 "
                    f"{s['ttft_p50_ms']:7.1f} ms  first args/content p50 "
                    f"{s['first_event_p50_ms']:7.1f} ms  itl p50 {s['itl_p50_ms']:6.1f} ms  cached "
                    f"{s['cached_tokens']:.0f}/{s['prompt_tokens']:.0f}  per round ttft "
                    + " ".join(f"{x['ttft_p50_ms']:.0f}" for x in rounds[name]),
                    flush=True,
                )
    return res


def plot(res: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, by_key in res.items():
        kinds = sorted({k.split("/")[0] for k in by_key})
        for kind in kinds:
            xs = sorted(int(k.split("/")[1]) for k in by_key if k.startswith(kind + "/"))
            ys = [by_key[f"{kind}/{x}"] for x in xs]
            label = f"{name} {kind}"
            a.plot(xs, [y["tok_s"] for y in ys], marker="o", label=label)
            b.plot(xs, [y["ttft_p50_ms"] for y in ys], marker="o", label=label)
    for ax, label in ((a, "aggregate tokens/s (median)"), (b, "TTFT p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("toolwire vs llama.cpp server, same GGUF, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def peer_template_args(name: str) -> tuple[str, ...]:
    if name == "model":
        return ()
    return ("--chat-template-file", str(pathlib.Path(__file__).with_name("peer_hermes.jinja")))


def peer_env(passive: bool) -> dict:
    """llama-server's environment: OpenMP as its users run it (spinning) unless --peer-passive,
    whatever this process inherited or set."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return dict(env, OMP_WAIT_POLICY="passive") if passive else env


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument(
        "--kinds",
        nargs="+",
        default=["text", "tool", "agent"],
        choices=["text", "tool", "agent", "after"],
    )

    def one_run_per_value(flag: str, choices: list[str], help: str) -> None:
        """A toolwire option given several values: one toolwire stack each, in one run; the
        first choice is the default."""
        p.add_argument(flag, nargs="+", default=choices[:1], choices=choices, help=help)

    one_run_per_value(
        "--variants",
        ["on", "off"],
        "toolwire runs: on (as shipped), off (--no-prefix-reuse --no-jump-forward)",
    )
    one_run_per_value(
        "--steps",
        ["auto", "ggml", "torch"],
        "toolwire runs, one per decode step backend (--step); auto: the default",
    )
    one_run_per_value(
        "--speculation",
        ["auto", "off", "ngram"],
        "toolwire runs, one per --speculation (auto: prompt-lookup drafts on the ggml step)",
    )
    p.add_argument(
        "--peer-spec",
        nargs="+",
        default=["none"],
        help="llama-server runs, one per --spec-type (none, ngram-simple, ngram-mod, ...)",
    )
    one_run_per_value(
        "--kv-types",
        ["default", "q8_0", "f16"],
        "toolwire runs, one per KV cache type of the ggml step (--kv-type)",
    )
    p.add_argument(
        "--peer-passive",
        action="store_true",
        help="run llama-server with OMP_WAIT_POLICY=passive, as toolwire's decode service runs "
        "its ggml step: on a busy machine spinning OpenMP threads cost either server several "
        "times its step time",
    )
    p.add_argument(
        "--peer-template",
        default="hermes",
        choices=["hermes", "model"],
        help="llama-server's chat template: hermes (bench/peer_hermes.jinja: SmolLM2's with "
        "toolwire's tools block, so that llama.cpp sees the tools and writes calls) or model "
        "(SmolLM2's own, which renders no tools: llama.cpp then answers tool requests in prose)",
    )
    p.add_argument(
        "--peer-tool",
        default="grammar",
        choices=["grammar", "chat"],
        help="llama-server's tool and agent requests: grammar (bench/peer_grammar.py: its own "
        "rendering of the prompt, then /completion under the call's JSON schema, so that it "
        "writes the call) or chat (its chat route with tool_choice required, where SmolLM2 "
        "writes prose)",
    )
    p.add_argument("--no-peer", action="store_true", help="toolwire variants only")
    p.add_argument(
        "--baseline",
        metavar="REF",
        help="also run this commit's toolwire as shipped then (a worktree, bench/baseline.py)",
    )
    p.add_argument("--dtype", default="auto")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads (-t)"
    )
    p.add_argument(
        "--model",
        default=model_source.EMBEDDED,
        help="a .gguf file both servers run (default: the embedded model's); bench.requantize "
        "writes the embedded model in other quantizations",
    )
    args = p.parse_args()
    if "torch" in args.steps and args.kv_types != ["default"]:
        p.error("--kv-types is the ggml step's (the torch step refuses --kv-type)")
    src = model_source.resolve(args.model)
    if not src.gguf_file:
        p.error("--model: a .gguf file (llama-server runs GGUF only)")
    gguf = str(pathlib.Path(src.folder, src.gguf_file))
    OUT.mkdir(exist_ok=True)
    procs, servers = [], {}
    try:
        if not args.no_peer:
            llama_cpp.ensure_built()
            for spec in args.peer_spec:
                peer, url = llama_cpp.serve(
                    gguf,
                    max(args.concurrency),
                    args.threads,
                    extra=(
                        "--jinja",
                        *peer_template_args(args.peer_template),
                        *(["--spec-type", spec] if spec != "none" else []),
                    ),
                    env=peer_env(args.peer_passive),
                )
                procs.append(peer)
                servers["llama.cpp" if spec == "none" else f"llama.cpp {spec}"] = (url, "embedded")
        runs = itertools.product(args.variants, args.steps, args.speculation, args.kv_types)
        for variant, step, spec, kv in runs:
            args.stack_flags = (
                ["--no-prefix-reuse", "--no-jump-forward"] * (variant == "off")
                + ["--step", step]
                + ["--speculation", spec]
                + ["--kv-type", kv] * (kv != "default")
            )
            stack, url, model = start_stack(args)
            procs.append(stack)
            name = " ".join(
                ["toolwire"]
                + [variant] * (args.variants != ["on"])
                + [step] * (args.steps != ["auto"])
                + [f"spec {spec}"] * (args.speculation != ["auto"])
                + [kv] * (args.kv_types != ["default"])
            )
            servers[name] = (url, model)
        if args.baseline:
            tree, found = baseline.prepare(args.baseline)
            print(f"baseline {args.baseline} = {tree.sha}: {tree.path}", flush=True)
            # as shipped then, on the one step benched when --steps names one
            one_step = len(args.steps) == 1 and args.steps[0] != "auto"
            args.stack_flags = ["--step", args.steps[0]] if one_step else []
            stack, url, model = start_stack(args, tree)
            procs.append(stack)
            servers[f"toolwire {tree.short}"] = (url, model)
        res = asyncio.run(measure(servers, args))
    finally:
        for proc in procs:
            stop_stack(proc)
    print("\n" + ratio_table(res, args.concurrency, args.kinds))
    (OUT / "peer.json").write_text(json.dumps(res, indent=2))
    plot(res, OUT / "peer.png")
    print(f"\nwrote {OUT / 'peer.json'} and {OUT / 'peer.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
