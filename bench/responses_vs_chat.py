"""The streamed Responses API against the chat completions API on one stack: what the second
presentation of the same run costs a client.

    python -m bench.responses_vs_chat                       # the embedded model, C = 1 4 16
    python -m bench.responses_vs_chat --concurrency 1 4 16 --rounds 5 --kinds text tool
    python -m bench.responses_vs_chat --url http://host:port/v1 --model NAME   # a running server

Why: `POST /v1/responses` is one more rendering of the run path that `/v1/chat/completions`
takes (gateway/responses/: the body becomes the same ChatCompletionRequest proto, the same
orchestrator runs it, render.py writes its events as Responses stream events). The target is
that it costs what the chat path costs: **tokens/s and TTFT within 5% of chat on the same
workload**, in one run. What can make it cost more is the gateway's work alone: the body's
validation and conversion, the larger events (each delta carries item id, output index and
sequence number; `response.created`, `response.in_progress` and the terminal event each carry
the whole Response), and, with `store: true` (the default), a SQLite write before the terminal
event.

What runs: one `toolwire up` (as bench/run.py starts it; its response store in a temporary
--state-dir), unless --url. For each kind and concurrency C, `--rounds` rounds; in each round
the same C chat bodies (bench/workloads.body: temperature 0, the round's cities) go to three
variants, each a burst of C concurrent streams:

  chat                 POST /v1/chat/completions, the body as is
  responses            POST /v1/responses, the same body converted (workloads.responses_body)
                       with `store: false`: the presentation alone
  responses (stored)   the same with `store: true`: the presentation and the store's write

The variants take turns within each round, in reverse order every other round (chat,
responses, stored; then stored, responses, chat), so a slow spell of a shared machine falls on
all of them alike, and each variant's mean position in the round is the same. Before the
sweep every prompt of each kind is sent once through both APIs (unmeasured), so that every
measured request finds its prompt's prefix cached alike, whichever variant ran it first in
its round; the `cached_tokens` columns of the JSON show it.

Per request, as a client sees it: TTFT is the first content or tool-call argument delta (a
chat chunk with `content` or `function.arguments`, a `response.output_text.delta` or
`response.function_call_arguments.delta`; not the role chunk, a call's name, or
`response.created`); ITL is the gap between two such deltas. Per round: tokens/s is the
completion tokens of usage (`completion_tokens`, `output_tokens`) over the burst's wall time;
ITL and TTFT p50 over the burst's requests. The table shows medians over rounds.

How to read the table: `tok/s ratio` is responses / chat (at least 0.95 meets the target),
`TTFT ratio` is responses / chat (at most 1.05 meets it); `target` says whether both do. The
stored columns show what the store adds on top. `gw µs/tok` is the gateway process's CPU
(user + system, /proc) per streamed token for each variant: the presentation's cost measured
apart from the wall clock, which on a shared 2-core machine moves by more than 5% between
rounds by itself; read a ratio outside 5% against it (and against the load average, printed
at the start and the end) before calling it the path's. The client's own CPU per token is in
the JSON (`cpu_us_client`): it runs on the same cores. Mean prompt and completion tokens per
request of each variant must agree (the same prompt, the same greedy output); a note under
the table says where they do not, since the variants then did different work.

Writes bench/out/responses_vs_chat.json: the arguments, the load averages, and each variant's
medians per `kind/C`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace

import orjson

from . import proc_cpu, remote
from .measure import Timing
from .run import KEY, OUT, start_stack, stop_stack, sweep, with_cpu
from .workloads import CITIES, body, responses_body

CHAT, RESPONSES, STORED = "chat", "responses", "responses (stored)"
VARIANTS = (CHAT, RESPONSES, STORED)
TARGET = 0.05  # the Responses path within 5% of chat: tokens/s and TTFT
WORK_TOLERANCE = 0.01  # mean prompt / completion tokens of two variants that differ more: a note


def _headers(api_key: str) -> dict:
    return {"Authorization": f"Bearer {api_key}"}


async def run_chat(base_url: str, api_key: str, bodies: list[dict]) -> dict:
    """The chat bodies streamed at once through /chat/completions, summarized over the wall."""
    async with remote.load_client(base_url, len(bodies), _headers(api_key)) as http:

        async def one(b: dict) -> Timing:
            t = Timing(time.perf_counter(), called=False)
            async with http.stream("POST", "/chat/completions", json=b) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = orjson.loads(line[6:])
                    if "error" in chunk:
                        raise RuntimeError(f"chat stream failed: {chunk['error']}")
                    if usage := chunk.get("usage"):
                        t.tokens = usage["completion_tokens"]
                        t.prompt_tokens = usage.get("prompt_tokens", 0)
                        details = usage.get("prompt_tokens_details") or {}
                        t.cached_tokens = details.get("cached_tokens") or 0
                    for ch in chunk.get("choices", []):
                        d = ch.get("delta", {})
                        calls = d.get("tool_calls") or []
                        t.called = t.called or bool(calls)
                        if d.get("content") or any(
                            c.get("function", {}).get("arguments") for c in calls
                        ):
                            now = time.perf_counter()
                            t.first = t.first or now
                            t.events.append(now)
            t.end = time.perf_counter()
            return t

        return await remote.timed(one, bodies)


DELTAS = ("response.output_text.delta", "response.function_call_arguments.delta")
TERMINAL = ("response.completed", "response.incomplete")


async def run_responses(base_url: str, api_key: str, bodies: list[dict]) -> dict:
    """Responses bodies streamed at once through /responses, read as run_chat reads chat:
    every event parsed, TTFT and ITL at the text and argument deltas, tokens from the terminal
    event's usage."""
    async with remote.load_client(base_url, len(bodies), _headers(api_key)) as http:

        async def one(b: dict) -> Timing:
            t = Timing(time.perf_counter(), called=False)
            ended = False
            async with http.stream("POST", "/responses", json=b) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue  # the `event:` line repeats the data's type
                    e = orjson.loads(line[6:])
                    kind = e["type"]
                    if kind in DELTAS:
                        if e["delta"]:
                            now = time.perf_counter()
                            t.first = t.first or now
                            t.events.append(now)
                    elif kind == "response.output_item.added":
                        t.called = t.called or e["item"]["type"] == "function_call"
                    elif kind in TERMINAL:
                        usage = e["response"]["usage"]
                        t.tokens = usage["output_tokens"]
                        t.prompt_tokens = usage["input_tokens"]
                        details = usage.get("input_tokens_details") or {}
                        t.cached_tokens = details.get("cached_tokens") or 0
                        ended = True
                    elif kind in ("response.failed", "error"):
                        raise RuntimeError(f"responses stream failed: {e}")
            if not ended:
                raise RuntimeError("a responses stream ended without its terminal event")
            t.end = time.perf_counter()
            return t

        return await remote.timed(one, bodies)


def variant_loads(base_url: str, api_key: str) -> dict:
    """variant -> run_one(chat bodies): chat as is, the Responses variants converted first
    (outside the timed burst)."""
    return {
        CHAT: lambda bodies: run_chat(base_url, api_key, bodies),
        RESPONSES: lambda bodies: run_responses(
            base_url, api_key, [responses_body(b, store=False) for b in bodies]
        ),
        STORED: lambda bodies: run_responses(
            base_url, api_key, [responses_body(b, store=True) for b in bodies]
        ),
    }


async def warm(base_url: str, api_key: str, model: str, kinds, max_tokens: int) -> None:
    """Every prompt the sweep sends (one per city and kind) once through each API, unmeasured:
    the prefix cache then holds them all before any variant is timed."""
    for kind in kinds:
        bodies = [body(kind, i, model, max_tokens) for i in range(len(CITIES))]
        await run_chat(base_url, api_key, bodies)
        await run_responses(base_url, api_key, [responses_body(b, store=False) for b in bodies])


async def measure(args, base_url: str, api_key: str, model: str, up_pid: int | None) -> dict:
    await warm(base_url, api_key, model, args.kinds, min(8, args.max_tokens))
    loads = variant_loads(base_url, api_key)
    if up_pid is not None:
        pids = proc_cpu.service_pids(up_pid)

        def read_cpu() -> dict:
            return {**proc_cpu.cpu_seconds(pids), "client": time.process_time()}

        loads = {label: with_cpu(load, read_cpu) for label, load in loads.items()}
    print(" and ".join(VARIANTS) + ", taking turns:", flush=True)
    return await sweep(
        {label: (load, model) for label, load in loads.items()},
        args.kinds,
        args.concurrency,
        args.rounds,
        args.max_tokens,
    )


# -- the table ---------------------------------------------------------------------------------
def ratio(a: float | None, b: float | None) -> float | None:
    """b / a, or None where either is missing, zero or NaN."""
    if not a or not b or a != a or b != b:
        return None
    return b / a


def within_target(chat: dict, resp: dict, target: float = TARGET) -> bool | None:
    """Whether the Responses medians meet the target against chat's: tokens/s at least
    (1 - target) of chat's, TTFT p50 at most (1 + target) of chat's. None: not measured."""
    tok = ratio(chat.get("tok_s"), resp.get("tok_s"))
    ttft = ratio(chat.get("ttft_p50_ms"), resp.get("ttft_p50_ms"))
    if tok is None or ttft is None:
        return None
    return tok >= 1 - target and ttft <= 1 + target


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None or v != v else f"{v:{fmt}}"


COLUMNS = [
    "kind",
    "C",
    "chat tok/s",
    "responses tok/s",
    "tok/s ratio",
    "chat TTFT p50",
    "responses TTFT p50",
    "TTFT ratio",
    "target (5%)",
    "stored tok/s",
    "stored TTFT p50",
    "ITL p50 chat / resp / stored",
    "gw µs/tok chat / resp / stored",
]


def _three(variants: tuple[dict, ...], field: str, fmt: str) -> str:
    return " / ".join(_num(x.get(field), fmt) for x in variants)


def table(results: dict[str, dict], target: float = TARGET) -> str:
    """results: {variant: {"kind/C": medians}} as measure() returns it, as one markdown table."""
    chat, resp, stored = (results.get(v, {}) for v in VARIANTS)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for key in [*chat, *(k for k in resp if k not in chat)]:
        kind, c = key.split("/")
        a, b, s = chat.get(key, {}), resp.get(key, {}), stored.get(key, {})
        ok = within_target(a, b, target)
        row = [
            kind,
            c,
            _num(a.get("tok_s"), ".1f"),
            _num(b.get("tok_s"), ".1f"),
            _num(ratio(a.get("tok_s"), b.get("tok_s")), ".3f"),
            _num(a.get("ttft_p50_ms"), ".1f") + " ms",
            _num(b.get("ttft_p50_ms"), ".1f") + " ms",
            _num(ratio(a.get("ttft_p50_ms"), b.get("ttft_p50_ms")), ".3f"),
            "-" if ok is None else ("yes" if ok else "NO"),
            _num(s.get("tok_s"), ".1f"),
            _num(s.get("ttft_p50_ms"), ".1f") + " ms",
            _three((a, b, s), "itl_p50_ms", ".1f") + " ms",
            _three((a, b, s), "cpu_us_gateway", ".0f"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def work_notes(results: dict[str, dict], tolerance: float = WORK_TOLERANCE) -> list[str]:
    """Where a Responses variant's mean prompt or completion tokens per request differ from
    chat's by more than `tolerance`: the variants did not do the same work there."""
    notes = []
    chat = results.get(CHAT, {})
    for variant in VARIANTS[1:]:
        for key, r in results.get(variant, {}).items():
            a = chat.get(key)
            if not a:
                continue
            for field, what in (("prompt_tokens", "prompt"), ("tokens_per_request", "completion")):
                x, y = a.get(field), r.get(field)
                if x is None or y is None:
                    continue
                if abs(y - x) > tolerance * max(abs(x), 1e-9):
                    notes.append(
                        f"{key}: {variant} {y:.1f} {what} tokens a request against chat's {x:.1f}"
                    )
    return notes


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--kinds", nargs="+", default=["text", "tool"], choices=["text", "tool"])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument(
        "--stack-flag",
        dest="stack_flags",
        action="append",
        default=[],
        help="passed to toolwire up, e.g. --stack-flag=--stream-interval=4",
    )
    p.add_argument("--url", help="measure this server (its /v1 base URL) instead of a new stack")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", KEY))
    p.add_argument("--out", type=pathlib.Path, default=OUT / "responses_vs_chat.json")
    args = p.parse_args(argv)

    start_load = loadavg()
    print(f"load average at start (1, 5, 15 min): {start_load}  ({os.cpu_count()} CPUs)")
    results: dict
    state_dir = None
    if args.url:
        results = asyncio.run(measure(args, args.url, args.api_key, args.model, None))
        server = {"url": args.url, "model": args.model}
    else:
        # Stored responses go to a SQLite file of this run, not the user's state directory.
        state_dir = tempfile.mkdtemp(prefix="toolwire-bench-responses-")
        up = SimpleNamespace(**vars(args))
        up.stack_flags = [*args.stack_flags, "--state-dir", state_dir]
        proc, url, model = start_stack(up)
        try:
            results = asyncio.run(measure(args, url, KEY, model, proc.pid))
        finally:
            stop_stack(proc)
            shutil.rmtree(state_dir, ignore_errors=True)
        server = {"toolwire_up": args.model, "model": model, "stack_flags": args.stack_flags}
    end_load = loadavg()
    print()
    print(table(results))
    notes = work_notes(results)
    for note in notes:
        print(f"  note: {note}")
    print(f"\nload average at start {start_load}, at end {end_load} (1, 5, 15 min)")
    out = {
        "target": f"responses tok/s and TTFT p50 within {TARGET:.0%} of chat",
        "args": {k: v for k, v in vars(args).items() if k not in ("api_key", "out", "stack_flags")},
        "server": server,
        "loadavg": {"start": start_load, "end": end_load, "cpus": os.cpu_count()},
        "work_notes": notes,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
