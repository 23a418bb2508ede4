"""Constraint cost per tool format: compile time of each format's constraint as a structural tag
and as the EBNF dialect's grammar (TensorRT-LLM's), and the token-mask cost over one call, on the
embedded model's vocabulary. Prints a table (medians); compare formats within one run.

    .venv/bin/python -m bench.format_constraints [--formats hermes,qwen3_coder,glm47,...] [--repeat 3]

Two runs (six helpers sharing 2 cores, so noisy: compare rows of one run), weather + time
tools; structural tag ms / EBNF ms / mask µs per token:
| format | mode | load 21 (the first script) | load 17 |
| hermes | auto | 171 / 6422 / 12 | 114 / 2173 / 104 |
| hermes | required | 80 / 70 / 6 | 57 / 34 / 12 |
| qwen3_coder | auto | 150 / 6315 / 6 | 65 / 2740 / 5 |
| qwen3_coder | required | 67 / 1581 / 5 | 26 / 1073 / 4 |
| glm45 | auto | - | 121 / 2567 / 4 |
| glm45 | required | - | 15 / 427 / 4 |
| glm47 | auto | 195 / 8725 / 463 | 49 / 2810 / 4 |
| glm47 | required | 77 / 1907 / 7 | 37 / 525 / 4 |
(the 463 and 104 µs masks are single passes over ~30 tokens under load, not repeatable.)
The issue-20b families, one run at load 7.4 (- : refused in the EBNF dialect, a 400: the
markers are non-ASCII, constraints/ebnf.py):
| hermes | auto / required | 21 / 520 / 6 | 12 / 10 / 4 |
| deepseek_v31 | auto / required | 30 / - / 3 | 11 / 11 / 3 |
| deepseek_v32 | auto / required | 22 / - / 3 | 10 / - / 2 |
| deepseek_v4 | auto / required | 20 / - / 3 | 6 / - / 2 |
| kimi_k2 | auto / required | 34 / 618 / 3 | 10 / 10 / 3 |
The XML-style families' raw string values are free text that may not hold the value's close
tag: as a grammar that is an automaton of rules, slower to compile than JSON strings.
"""

from __future__ import annotations

import argparse
import statistics
import time

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import grammar_of, in_dialect
from toolwire.constraints.dialects import EBNF, DialectError
from toolwire.constraints.kinds import Constraint
from toolwire.formats import Tool, ToolChoice, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.runtime import model_source

TOOLS = [
    Tool(
        "get_weather",
        "Get the weather.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        strict=True,
    ),
    Tool("get_time", "The time."),
]
CALLS = {  # one call of get_weather as each format writes it
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'
    "\n</tool_call>",
    "qwen3_coder": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=unit>\nc\n</parameter>\n</function>\n</tool_call>",
    "glm45": "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
    "<arg_key>unit</arg_key>\n<arg_value>c</arg_value>\n</tool_call>",
    "glm47": "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
    "<arg_key>unit</arg_key><arg_value>c</arg_value></tool_call>",
    "deepseek_v31": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
    '{"city": "Paris", "unit": "c"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    "kimi_k2": "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
    '<|tool_call_argument_begin|>{"city": "Paris", "unit": "c"}<|tool_call_end|>'
    "<|tool_calls_section_end|>",
}
for _v, _block in (("deepseek_v32", "function_calls"), ("deepseek_v4", "tool_calls")):
    CALLS[_v] = (
        f'\n\n<｜DSML｜{_block}>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="city" '
        'string="true">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name="unit" string="true">c'
        f"</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜{_block}>"
    )


def _median_ms(compiler, grammar, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compiler.compile_grammar(grammar)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def embedded_tokenizer():
    """The embedded model's tokenizer and its info, as the template service reads them."""
    tok = model_source.load_tokenizer(model_source.resolve("embedded"))
    info = xgr.TokenizerInfo.from_huggingface(
        tok, vocab_size=len(tok), stop_token_ids=[tok.eos_token_id]
    )
    return tok, info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--formats", default="hermes,qwen3_coder,glm47")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tok, info = embedded_tokenizer()
    compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
    print("| format | mode | structural tag ms | EBNF ms | mask µs/token |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.formats.split(","):
        fmt = get_format(name)
        for mode in ("auto", "required"):
            built = build_constraint(fmt, TOOLS, ToolChoice(mode), True, common.ResponseFormat())
            c = Constraint.from_proto(built)
            tag = grammar_of(c)
            try:
                grammar = grammar_of(in_dialect(c, EBNF))
            except DialectError:  # refused in that dialect (non-ASCII markers): a 400
                grammar = None
            matcher = xgr.GrammarMatcher(compiler.compile_grammar(tag))
            mask = xgr.allocate_token_bitmask(1, info.vocab_size)
            ids = tok.encode(CALLS[name], add_special_tokens=False)
            start = time.perf_counter()
            for i in ids:
                matcher.fill_next_token_bitmask(mask)
                assert matcher.accept_token(i), (name, mode, i)
            mask_us = (time.perf_counter() - start) / len(ids) * 1e6
            print(
                f"| {name} | {mode} | {_median_ms(compiler, tag, args.repeat):.0f} | "
                f"{f'{_median_ms(compiler, grammar, args.repeat):.0f}' if grammar else '-'} | "
                f"{mask_us:.0f} |"
            )


if __name__ == "__main__":
    main()
