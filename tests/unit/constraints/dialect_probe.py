"""Run under one xgrammar version (a subprocess; the 0.1.25 one from a throwaway install):
compile each constraint, say whether it accepts each probe string, and sample strings from it by
random walks over a small vocabulary. Reads and writes JSON: python dialect_probe.py IN OUT.

The dialect test compares two versions' answers on the same requests, so a grammar that compiles
under 0.1.25 but means something else there is caught, not only one that fails to compile."""

from __future__ import annotations

import json
import random
import sys

import xgrammar as xgr

# Characters one at a time, and the multi-character tokens the formats use, so a walk can open
# calls, think, and hit the markers a constraint bans.
MARKERS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<tool",
    "[TOOL_CALLS]",
    "[ARGS]",
    "<think>",
    "</think>",
    "<|python_tag|>",
    '{"name": "',
    '", "arguments": ',
    '", "parameters": ',
    '"city": "',
    '"unit": "',
    "get_weather",
    "get_time",
    "[get_weather(",
    "[get_time(",
    "city=",
    "<function=",
    "</function>",
    "<parameter=",
    "</parameter>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "\n",
]
VOCAB = [chr(i) for i in range(32, 127)] + MARKERS
EOS = len(VOCAB)


def compile_one(compiler: xgr.GrammarCompiler, kind: str, text: str):
    if kind == "ebnf":
        return compiler.compile_grammar(text)
    if kind == "structural_tag":
        return compiler.compile_structural_tag(text)
    return compiler.compile_json_schema(
        text, strict_mode=False, any_whitespace=True, max_whitespace_cnt=1
    )


def verdict(grammar, s: str) -> str:
    """'full' (accepted and may end), 'prefix' (accepted, must go on) or 'no'."""
    m = xgr.GrammarMatcher(grammar)
    if not m.accept_string(s):
        return "no"
    return "full" if m.accept_token(EOS) else "prefix"


def walk(grammar, rng: random.Random, max_tokens: int = 120) -> str | None:
    """A random string the grammar accepts whole (None if the walk ran out of tokens)."""
    m = xgr.GrammarMatcher(grammar)
    mask = xgr.allocate_token_bitmask(1, len(VOCAB) + 1)
    out = []
    for _ in range(max_tokens):
        m.fill_next_token_bitmask(mask)
        bits = mask[0].tolist()
        allowed = [t for t in range(len(VOCAB) + 1) if bits[t // 32] >> (t % 32) & 1]
        if not allowed:  # the grammar ended (a stop string, say) or reached a dead end
            return "".join(out) if m.is_terminated() else None
        if EOS in allowed and rng.random() < 0.15:
            return "".join(out)
        special = [t for t in allowed if t >= len(VOCAB) - len(MARKERS) and t != EOS]
        choice = rng.choice(special if special and rng.random() < 0.3 else allowed)
        if choice == EOS:
            return "".join(out)
        assert m.accept_token(choice)
        out.append(VOCAB[choice])
    return None


def main(src: str, dst: str) -> None:
    job = json.load(open(src))
    info = xgr.TokenizerInfo(VOCAB + ["<eos>"], stop_token_ids=[EOS])
    compiler = xgr.GrammarCompiler(info)
    rng = random.Random(job.get("seed", 0))
    result = {}
    for c in job["constraints"]:
        try:
            g = compile_one(compiler, c["kind"], c["text"])
        except Exception as e:  # noqa: BLE001 - reported, the test fails on it
            result[c["id"]] = {"error": str(e).splitlines()[0][-300:]}
            continue
        samples = [walk(g, rng) for _ in range(job.get("walks", 0))]
        result[c["id"]] = {
            "verdicts": [verdict(g, s) for s in job["probes"].get(c["id"], [])],
            "samples": [s for s in samples if s is not None],
        }
    json.dump(result, open(dst, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
