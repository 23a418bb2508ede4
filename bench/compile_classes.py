"""Compile time per tool set through xgrammar's own Python classes and through toolwire's classes
over its compiled core (toolwire/constraints/xgrammar_core.py), which the services use so as
not to load torch, transformers and pydantic. One process, the same tokenizer info, the two
paths taking turns on each constraint (parse and compile, as a grammar worker does); medians.

    python -m bench.compile_classes [--formats hermes,qwen3_coder,glm47] [--rounds 7]

xgrammar's package loads torch, so this runs where torch is installed (the dev venv).
"""

from __future__ import annotations

import argparse
import statistics
import time

import xgrammar

from toolwire.constraints import xgrammar_core as core
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import JSON_SCHEMA_OPTIONS
from toolwire.constraints.kinds import Constraint
from toolwire.formats import ToolChoice, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .format_constraints import TOOLS, embedded_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--formats", default="hermes,qwen3_coder,glm47")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    _, info = embedded_tokenizer()
    package_info = xgrammar.TokenizerInfo.deserialize_json(info.serialize_json())
    paths = {
        "xgrammar's classes": (
            xgrammar.Grammar,
            xgrammar.GrammarCompiler(package_info, max_threads=1, cache_enabled=False),
        ),
        "over the core": (core.Grammar, core.GrammarCompiler(info)),
    }
    print(f"| constraint | {' ms | '.join(paths)} ms | ratio |")
    print("|---|---|---|---|")
    cases = []
    for name in args.formats.split(","):
        for mode in ("auto", "required"):
            built = build_constraint(
                get_format(name), TOOLS, ToolChoice(mode), True, common.ResponseFormat()
            )
            cases.append((f"{name} {mode} (structural tag)", Constraint.from_proto(built).text))
    schema = TOOLS[0].parameters
    for label, text in cases + [("strict schema", None)]:
        times: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(args.rounds):
            for path, (grammar, compiler) in paths.items():
                t0 = time.perf_counter()
                if text is None:
                    parsed = grammar.from_json_schema(schema, **JSON_SCHEMA_OPTIONS)
                else:
                    parsed = grammar.from_structural_tag(text)
                compiler.compile_grammar(parsed)
                times[path].append(time.perf_counter() - t0)
        ms = [1000 * statistics.median(t) for t in times.values()]
        print(f"| {label} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[1] / ms[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
