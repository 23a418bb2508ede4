"""Whether a change to the serving path changed what a client sees: the same seeded requests
through an older commit's stack and the current tree's, both up at once, compared field by
field as the official SDK hands them over.

    python -m bench.same_output --baseline f0eead5 --requests 12 --concurrency 1 8

A path that moves tokens differently (decode pushing them straight to the extractor, say) must
not move which tokens come out, nor how they are cut into content, tool calls and a finish
reason, streamed or not. Unit tests pin each piece apart; this holds the whole against the
path it replaces, on the real model, with the SDK's own parsing as the judge, so a difference
in the wire shape that the SDK reads differently counts too.

What is compared is what a client keeps: the content and reasoning_content as concatenated,
each tool call's type, name and arguments (a custom call's input), the finish reason and the
prompt and completion token counts. Tool call ids are random, so they are not compared;
cached_tokens depends on what each stack's prefix cache holds when the request comes, so it is
shown but not counted. A request's streamed answer is also held against its non-streamed one
on the same stack: the two paths that build them (chunks, and the assembled message) split
apart in the gateway.

Batched decoding on a CPU need not be bit-identical to one sequence at a time (a different
batch adds the same numbers in another order, and a near tie can flip a greedy pick), nor
from one batch to another; when a request ends a step sooner, every other request of its wave
decodes in smaller batches from then on. So both stacks get the same requests in the same
order in the same waves of C, and the current stack runs every set twice. A difference is the
engine's, reported as such and not failing the run, when two runs of the same code differ too
(on that request, streamed or not, since both modes are the same engine work; or on another
request of its wave), or when the new answer is one the old stack also gave that request at
that C. What is left is the path's, and fails the run; so does a current stack's streamed
answer that differs from its non-streamed one where nothing of that explains it, unless the
old stack's two differ in the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import baseline, proc_cpu
from .workloads import CITIES, WEATHER

OUT = pathlib.Path(__file__).resolve().parent / "out"

# Custom tools as tests/e2e/test_custom_tools.py sends them: one constrained by a regex, one
# by a Lark grammar (bounded, so that the small model must end it).
TICKET_RE = r"[A-Z]{3}-[0-9]{2,4}"
TICKET = {
    "type": "custom",
    "custom": {
        "name": "open_ticket",
        "description": "Open a support ticket; the input is the ticket id.",
        "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": TICKET_RE}},
    },
}
PATCH_LARK = 'start: "*** Begin\\n" line line? line? "*** End"\nline: /[+-][a-z ]{0,20}\\n/\n'
PATCH = {
    "type": "custom",
    "custom": {
        "name": "apply_patch",
        "description": "Apply a patch.",
        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": PATCH_LARK}},
    },
}
FORECAST = {
    "type": "json_schema",
    "json_schema": {
        "name": "forecast",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "temperature_c": {"type": "integer"},
                "sky": {"type": "string", "enum": ["clear", "cloudy", "rain"]},
            },
            "required": ["city", "temperature_c", "sky"],
            "additionalProperties": False,
        },
    },
}


def _ask_weather(i: int) -> list[dict]:
    return [{"role": "user", "content": f"What is the weather in {CITIES[i % len(CITIES)]}?"}]


def _story(i: int) -> list[dict]:
    city = CITIES[i % len(CITIES)]
    return [{"role": "user", "content": f"Write a short story about a traveller in {city}."}]


def _tools(i: int, choice: Any, temperature: float = 0, **more: Any) -> dict:
    return {
        "messages": _ask_weather(i),
        "tools": [WEATHER],
        "tool_choice": choice,
        "parallel_tool_calls": False,
        "temperature": temperature,
        "max_tokens": 64,
        **more,
    }


def _custom(name: str) -> dict:
    return {"type": "custom", "custom": {"name": name}}


# workload -> the SDK's create() arguments for request i, but model, stream and seed.
WORKLOADS: dict[str, Callable[[int], dict]] = {
    "tool auto": lambda i: _tools(i, "auto"),
    "tool required": lambda i: _tools(i, "required"),
    "tool named": lambda i: _tools(i, {"type": "function", "function": {"name": "get_weather"}}),
    "tool required t=1": lambda i: _tools(i, "required", temperature=1.0),
    "tool auto t=1": lambda i: _tools(i, "auto", temperature=1.0),
    "parallel calls": lambda i: {
        **_tools(i, "required", parallel_tool_calls=True, max_tokens=120),
        "messages": [
            {
                "role": "user",
                "content": f"What is the weather in {CITIES[i % len(CITIES)]} "
                f"and in {CITIES[(i + 3) % len(CITIES)]}?",
            }
        ],
    },
    # 24 tokens end inside the arguments on the embedded model (its whole call takes ~38).
    "call cut by max_tokens": lambda i: _tools(i, "required", max_tokens=24),
    # A stop string the text reaches (its first sentence's end), often inside a token.
    "text with stop": lambda i: {
        "messages": _story(i),
        "temperature": 0,
        "max_tokens": 80,
        "stop": ["."],
    },
    "text t=1": lambda i: {"messages": _story(i), "temperature": 1.0, "max_tokens": 48},
    "custom regex": lambda i: {
        "messages": [{"role": "user", "content": "My printer is broken, open a ticket."}],
        "tools": [WEATHER, TICKET],
        "tool_choice": _custom("open_ticket"),
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 40,
    },
    "custom lark": lambda i: {
        "messages": [{"role": "user", "content": "Add a line saying hello."}],
        "tools": [PATCH, TICKET],
        "tool_choice": _custom("apply_patch"),
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 150,
    },
    "json_schema": lambda i: {
        "messages": _ask_weather(i),
        "response_format": FORECAST,
        "temperature": 0,
        "max_tokens": 64,
    },
}


@dataclass(frozen=True)
class Request:
    index: int
    workload: str
    kwargs: dict  # create()'s arguments but model and stream


def requests(n: int, seed: int = 1000) -> list[Request]:
    """n requests, the workloads in turn (each once while n allows), each with its own seed."""
    names = list(WORKLOADS)
    return [
        Request(i, names[i % len(names)], {**WORKLOADS[names[i % len(names)]](i), "seed": seed + i})
        for i in range(n)
    ]


# --- what a client sees -------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    type: str | None
    name: str | None
    arguments: str  # a function call's arguments, a custom call's input


@dataclass(frozen=True)
class Seen:
    """One answer as the client keeps it. error is "status code param" of a failed request."""

    error: str | None = None
    choices: int = 1
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: tuple[Call, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None  # shown, never compared


def _plain(obj: Any) -> Any:
    """An SDK object as the dict it was parsed from (its untyped extras, such as
    reasoning_content or a custom call's `custom`, included); a dict as it is."""
    return obj.model_dump() if hasattr(obj, "model_dump") else obj


def _usage(seen: dict, usage: dict | None) -> None:
    if usage:
        seen["prompt_tokens"] = usage.get("prompt_tokens")
        seen["completion_tokens"] = usage.get("completion_tokens")
        seen["cached_tokens"] = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")


def from_completion(completion: Any) -> Seen:
    """A non-streamed ChatCompletion (SDK object or dict): its first choice and usage."""
    c = _plain(completion)
    choices = c.get("choices") or []
    seen: dict[str, Any] = {"choices": len(choices)}
    if choices:
        ch = choices[0]
        m = ch.get("message") or {}
        calls = []
        for t in m.get("tool_calls") or []:
            if t.get("type") == "custom" or t.get("custom"):
                custom = t.get("custom") or {}
                calls.append(Call(t.get("type"), custom.get("name"), custom.get("input") or ""))
            else:
                f = t.get("function") or {}
                calls.append(Call(t.get("type"), f.get("name"), f.get("arguments") or ""))
        seen.update(
            content=m.get("content"),
            reasoning_content=m.get("reasoning_content"),
            tool_calls=tuple(calls),
            finish_reason=ch.get("finish_reason"),
        )
    _usage(seen, c.get("usage"))
    return Seen(**seen)


def from_chunks(chunks: Iterable[Any]) -> Seen:
    """A stream's chunks (SDK objects or dicts) as the client puts them together: content and
    reasoning_content concatenated, each call (by its index) named by the piece that opens it
    and its arguments (or custom input) the concatenation of every piece, the last finish
    reason and the last usage."""
    content: list[str] | None = None
    reasoning: list[str] | None = None
    calls: dict[int, dict] = {}
    indices: set[int] = set()
    seen: dict[str, Any] = {}
    for chunk in chunks:
        c = _plain(chunk)
        for ch in c.get("choices") or []:
            indices.add(ch.get("index", 0))
            if ch.get("index", 0) != 0:
                continue
            d = ch.get("delta") or {}
            if d.get("content") is not None:
                content = (content or []) + [d["content"]]
            if d.get("reasoning_content") is not None:
                reasoning = (reasoning or []) + [d["reasoning_content"]]
            for t in d.get("tool_calls") or []:
                call = calls.setdefault(t.get("index", 0), {"type": None, "name": None, "args": []})
                piece = t.get("custom") or t.get("function") or {}
                if t.get("type"):
                    call["type"] = t["type"]
                elif t.get("custom") and call["type"] is None:
                    call["type"] = "custom"
                if piece.get("name"):
                    call["name"] = piece["name"]
                text = piece.get("input") if t.get("custom") else piece.get("arguments")
                if text:
                    call["args"].append(text)
            if ch.get("finish_reason") is not None:
                seen["finish_reason"] = ch["finish_reason"]
        _usage(seen, c.get("usage"))
    return Seen(
        choices=len(indices),
        content=None if content is None else "".join(content),
        reasoning_content=None if reasoning is None else "".join(reasoning),
        tool_calls=tuple(
            Call(v["type"], v["name"], "".join(v["args"])) for _, v in sorted(calls.items())
        ),
        **seen,
    )


def from_error(e: BaseException) -> Seen:
    """A failed request: the HTTP status and the error's code and param (the message's
    wording may change without a client noticing), or the exception's class."""
    status = getattr(e, "status_code", None)
    body = getattr(e, "body", None)
    if status is None:
        return Seen(error=type(e).__name__, choices=0)
    body = body if isinstance(body, dict) else {}
    return Seen(error=f"{status} {body.get('code')} {body.get('param')}", choices=0)


# --- comparing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    field: str
    a: Any
    b: Any

    def show(self, a_label: str, b_label: str, width: int = 70) -> str:
        a, b = self.a, self.b
        if isinstance(a, str) and isinstance(b, str):
            p = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            start = max(0, p - 20)
            cut = lambda s: ("…" if start else "") + repr(s[start : start + width])  # noqa: E731
            where = f" (from char {p}; lengths {len(a)}, {len(b)})"
            return f"{self.field}{where}: {a_label} {cut(a)} / {b_label} {cut(b)}"
        return f"{self.field}: {a_label} {a!r} / {b_label} {b!r}"


def first_difference(a: Seen, b: Seen, across_modes: bool = False) -> Difference | None:
    """The first field a client would see differ, in the order a client reads them, or None.
    cached_tokens is never compared. across_modes (a streamed answer against a non-streamed
    one): a null content is the same as none streamed, which a stream cannot tell apart from
    an empty one."""

    def text(v: str | None) -> str | None:
        return (v or None) if across_modes else v

    pairs: list[tuple[str, Any, Any]] = [
        ("error", a.error, b.error),
        ("choices", a.choices, b.choices),
        ("content", text(a.content), text(b.content)),
        ("reasoning_content", text(a.reasoning_content), text(b.reasoning_content)),
        ("tool_calls (count)", len(a.tool_calls), len(b.tool_calls)),
    ]
    for k, (x, y) in enumerate(zip(a.tool_calls, b.tool_calls)):
        pairs += [(f"tool_calls[{k}].{f}", getattr(x, f), getattr(y, f)) for f in vars(x)]
    pairs += [
        ("finish_reason", a.finish_reason, b.finish_reason),
        ("usage.prompt_tokens", a.prompt_tokens, b.prompt_tokens),
        ("usage.completion_tokens", a.completion_tokens, b.completion_tokens),
    ]
    for name, x, y in pairs:
        if x != y:
            return Difference(name, x, y)
    return None


MATCH, REAL, ALSO_OLD = "match", "MISMATCH", "also old"
ENGINE, WAVE, OLD_GAVE_IT = "engine", "engine (wave)", "engine (old gave it too)"


def waves(n: int, c: int) -> list[range]:
    """The request indices sent together at concurrency c, in order."""
    return [range(s, min(s + c, n)) for s in range(0, n, c)]


def nondeterministic(first: list[Seen], again: list[Seen], c: int) -> tuple[set[int], set[int]]:
    """Two runs of the same stack at concurrency c: (the requests that differed, the requests
    of a wave in which some request differed)."""
    own = {i for i, (x, y) in enumerate(zip(first, again)) if first_difference(x, y)}
    wave = {i for w in waves(len(first), c) if own & set(w) for i in w}
    return own, wave


def verdict(
    diff: Difference | None, i: int, own: set[int], wave: set[int], old_gave_it: bool = False
) -> str:
    """A difference for request i is the engine's when the same stack differed with itself on
    that request (own) or on another of its wave (wave, see the module docstring), or when the
    answer that differs is one the old stack gave to the same request at the same C too
    (old_gave_it: the two stacks draw from the same few outcomes, in another order)."""
    if diff is None:
        return MATCH
    if i in own:
        return ENGINE
    if i in wave:
        return WAVE
    if old_gave_it:
        return OLD_GAVE_IT
    return REAL


def among(answer: Seen, others: Iterable[Seen]) -> bool:
    """answer is one of others, streamed or not."""
    return any(first_difference(answer, o, across_modes=True) is None for o in others)


@dataclass
class Finding:
    request: Request
    stream: bool | None  # None: streamed against non-streamed
    concurrency: int
    what: str  # "old/new", "stream/non-stream (new)", ...
    verdict: str
    diff: Difference
    labels: tuple[str, str]  # what diff.a and diff.b are
    stack: str | None = None  # a streamed/non-streamed difference: on "old" or "new"


@dataclass
class Row:
    workload: str
    stream: bool
    concurrency: int
    n: int = 0
    old_new: dict[str, int] = field(default_factory=dict)
    twice: int = 0  # requests where the current stack differed from itself
    sns_old: dict[str, int] = field(default_factory=dict)
    sns_new: dict[str, int] = field(default_factory=dict)
    cached: int = 0  # requests where old and new reported different cached_tokens


def compare(
    reqs: list[Request],
    runs: dict[tuple[str, bool, int], list[Seen]],
    concurrency: list[int],
    labels: tuple[str, str] = ("old", "new"),
) -> tuple[list[Row], list[Finding]]:
    """runs[(stack, stream, C)]: each request's answer, stack one of "old", "new", "new again".
    A row per workload, stream and C; a finding per request that differed anywhere."""
    rows: dict[tuple[str, bool, int], Row] = {}
    findings: list[Finding] = []
    old_l, new_l = labels
    for c in concurrency:
        # The engine's own nondeterminism at C: the new stack differing with itself, streamed
        # or not. A request's tokens come from the same engine work in either mode (only the
        # gateway renders them otherwise), so either mode's evidence covers both.
        nd = {
            s: nondeterministic(runs[("new", s, c)], runs[("new again", s, c)], c)
            for s in (False, True)
        }
        own_any = nd[False][0] | nd[True][0]
        wave_any = nd[False][1] | nd[True][1]
        for stream in (False, True):
            own = nd[stream][0]
            old, new = runs[("old", stream, c)], runs[("new", stream, c)]
            for r in reqs:
                row = rows.setdefault((r.workload, stream, c), Row(r.workload, stream, c))
                row.n += 1
                i = r.index
                row.twice += i in own
                row.cached += old[i].cached_tokens != new[i].cached_tokens
                d = first_difference(old[i], new[i])
                old_gave_it = among(new[i], (runs[("old", m, c)][i] for m in (False, True)))
                v = verdict(d, i, own_any, wave_any, old_gave_it)
                row.old_new[v] = row.old_new.get(v, 0) + 1
                if d:
                    findings.append(Finding(r, stream, c, "old/new", v, d, (old_l, new_l)))
                sns: dict[str, Difference | None] = {}
                for stack, counts in (("old", row.sns_old), ("new", row.sns_new)):
                    d = first_difference(
                        runs[(stack, False, c)][i], runs[(stack, True, c)][i], across_modes=True
                    )
                    sns[stack] = d
                    v = verdict(d, i, own_any, wave_any)
                    if stack == "new" and v == REAL and d == sns["old"]:
                        v = ALSO_OLD  # the old stack splits the same way: not the change's
                    counts[v] = counts.get(v, 0) + 1
                    if d and stream:  # one finding per request, on its streamed row
                        label = old_l if stack == "old" else new_l
                        findings.append(
                            Finding(
                                r,
                                None,
                                c,
                                f"stream/non-stream ({label})",
                                v,
                                d,
                                ("non-streamed", "streamed"),
                                stack,
                            )
                        )
    return list(rows.values()), findings


def failed(findings: list[Finding]) -> list[Finding]:
    """The findings that fail the run: old/new differences the engine's nondeterminism does
    not explain, and the current stack's streamed/non-streamed ones not in the old too."""
    return [f for f in findings if f.verdict == REAL and f.stack in (None, "new")]


def _cell(counts: dict[str, int], n: int) -> str:
    cell = f"{counts.get(MATCH, 0)}/{n}"
    kinds = (REAL, ENGINE, WAVE, OLD_GAVE_IT, ALSO_OLD)
    rest = [f"{k} {counts[k]}" for k in kinds if counts.get(k)]
    return cell + (f" ({', '.join(rest)})" if rest else "")


def table(rows: list[Row], labels: tuple[str, str]) -> str:
    old_l, new_l = labels
    cols = [
        "workload",
        "stream",
        "C",
        f"match {old_l}/{new_l}",
        f"{new_l} differs from itself",
        f"match stream/non-stream {old_l}",
        f"match stream/non-stream {new_l}",
        "cached_tokens differ (not counted)",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r.concurrency, r.stream)):
        cells = [
            r.workload,
            "yes" if r.stream else "no",
            str(r.concurrency),
            _cell(r.old_new, r.n),
            f"{r.twice}/{r.n}",
            _cell(r.sns_old, r.n),
            _cell(r.sns_new, r.n),
            f"{r.cached}/{r.n}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- running ------------------------------------------------------------------------------


async def one(client: Any, model: str, r: Request, stream: bool) -> Seen:
    import openai

    try:
        if not stream:
            return from_completion(await client.chat.completions.create(model=model, **r.kwargs))
        chunks = await client.chat.completions.create(
            model=model, stream=True, stream_options={"include_usage": True}, **r.kwargs
        )
        return from_chunks([c async for c in chunks])
    except openai.OpenAIError as e:
        return from_error(e)


async def run_set(client: Any, model: str, reqs: list[Request], stream: bool, c: int) -> list[Seen]:
    """Every request, in waves of c sent at once, each wave waited for before the next: the
    same batches on both stacks, as far as the engine's scheduling makes them."""
    out: list[Seen] = []
    for w in waves(len(reqs), c):
        out += await asyncio.gather(*(one(client, model, reqs[i], stream) for i in w))
    return out


async def run_all(
    servers: dict[str, tuple[str, str]], reqs: list[Request], concurrency: list[int]
) -> dict[tuple[str, bool, int], list[Seen]]:
    """servers: "old"/"new" -> (base URL, served model). At each C, not streamed then streamed:
    old, new, and new again."""
    import openai

    from .run import KEY

    clients = {
        k: openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=600)
        for k, (url, _) in servers.items()
    }
    warm = Request(-1, "warm", {**_tools(0, "required", max_tokens=8), "seed": 1})
    for k, (_, model) in servers.items():  # the same first request on both: compiles, caches
        await one(clients[k], model, warm, stream=True)
    runs: dict[tuple[str, bool, int], list[Seen]] = {}
    for c in concurrency:
        for stream in (False, True):
            for stack in ("old", "new", "new again"):
                server = stack.split()[0]
                t = time.perf_counter()
                runs[(stack, stream, c)] = await run_set(
                    clients[server], servers[server][1], reqs, stream, c
                )
                errors = sum(s.error is not None for s in runs[(stack, stream, c)])
                print(
                    f"  C={c} {'streamed' if stream else 'not streamed':12} {stack:9} "
                    f"{time.perf_counter() - t:6.1f} s" + (f", {errors} errors" if errors else ""),
                    flush=True,
                )
    for cl in clients.values():
        await cl.close()
    return runs


def start(args, tree: baseline.Tree | None, log: pathlib.Path, tries: int = 1, pause: float = 30):
    """bench.run's start_stack with the services' logs in `log` (toolwire up --log-file, which
    changes nothing a client sees), its tail printed when the start fails. The current tree
    is tried `tries` times: others may be mid-edit."""
    from .run import start_stack

    log.unlink(missing_ok=True)
    flagged = argparse.Namespace(
        **{**vars(args), "stack_flags": [*args.stack_flags, "--log-file", str(log)]}
    )
    for attempt in range(1, tries + 1):
        try:
            return start_stack(flagged, tree)
        except SystemExit as e:
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            print(f"the stack did not start (try {attempt}/{tries}): {e}", flush=True)
            print("\n".join(f"    {line}" for line in tail), flush=True)
            if attempt == tries:
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", metavar="REF", required=True, help="the older commit to hold")
    p.add_argument("--model", default="embedded")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--requests", type=int, default=len(WORKLOADS), help="requests in the set")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument(
        "--stack-flag",
        dest="stack_flags",
        action="append",
        default=[],
        help="passed to both stacks' toolwire up, e.g. --stack-flag=--no-prefix-reuse",
    )
    args = p.parse_args()
    args.threads = args.kv_type = None
    from .run import decode_library, stop_stack

    tree, found = baseline.prepare(args.baseline)
    print(
        f"baseline {args.baseline} = {tree.sha}: {tree.path}\n  its stack imports "
        + ", ".join(f"{n} from {pathlib.Path(f).parent}" for n, f in found.items()),
        flush=True,
    )
    labels = (f"old ({tree.short})", "new")
    reqs = requests(args.requests)
    stacks: dict[str, subprocess.Popen] = {}
    try:
        OUT.mkdir(exist_ok=True)
        proc, old_url, old_model = start(args, tree, OUT / "same_output-old.log")
        stacks["old"] = proc
        baseline.check_processes(tree, {"up": proc.pid, **proc_cpu.service_pids(proc.pid)})
        proc, new_url, new_model = start(args, None, OUT / "same_output-new.log", tries=6)
        stacks["new"] = proc
        libraries = {k: decode_library(pr.pid) for k, pr in stacks.items()}
        for k, lib in libraries.items():
            print(f"{k}: decode maps {lib or 'no llama.cpp library (the torch step)'}")
        if len(set(libraries.values())) > 1:
            print("  the decode services run different llama.cpp libraries: compared too")
        print(f"{len(reqs)} requests at C = {args.concurrency}:", flush=True)
        servers = {"old": (old_url, old_model), "new": (new_url, new_model)}
        runs = asyncio.run(run_all(servers, reqs, args.concurrency))
    finally:
        for pr in stacks.values():
            stop_stack(pr)
    rows, findings = compare(reqs, runs, args.concurrency, labels)
    print("\n" + table(rows, labels))
    bad = failed(findings)
    if findings:
        print("\nfirst differing field of each difference:")
    for f in findings:
        mode = "" if f.stream is None else ("streamed, " if f.stream else "not streamed, ")
        mark = "FAIL " if f in bad else ""
        print(
            f"  {mark}#{f.request.index} {f.request.workload} ({mode}C={f.concurrency}) "
            f"{f.what} [{f.verdict}]: {f.diff.show(*f.labels)}"
        )
    OUT.mkdir(exist_ok=True)
    dump = {
        "baseline": {"ref": args.baseline, "sha": tree.sha},
        "requests": [asdict(r) for r in reqs],
        "runs": {
            f"{k[0]}/{'stream' if k[1] else 'whole'}/{k[2]}": [asdict(s) for s in v]
            for k, v in runs.items()
        },
    }
    (OUT / "same_output.json").write_text(json.dumps(dump, indent=1))
    print(f"\nwrote {OUT / 'same_output.json'}")
    if bad:
        print(f"{len(bad)} differences the engine's nondeterminism does not explain")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
