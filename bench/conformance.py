"""Conformance of the strict-mode constraint against JSON Schema test data.

    python -m bench.conformance ../shared/conformance [--markdown]

For each keyword of the JSON Schema Test Suite (draft 2020-12) and for the Glaive tool schemas:
a schema toolwire refuses (a keyword it cannot enforce) counts as refused at request time; every
other schema is compiled the way a strict tool's arguments are (an xgrammar structural tag) and
each instance is fed to the matcher. `valid: true` instances must be accepted (the grammar is
not narrower than the schema) and `valid: false` ones refused (it is not wider).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import dataclass, field

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.constraints.schemas import first_unsupported
from toolwire.formats.base import schema_content
from toolwire.runtime import model_source

# The suite files of keywords a strict tool may use (claimed), and of ones toolwire refuses.
CLAIMED = [
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "anyOf",
    "ref",
    "defs",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "boolean_schema",
    "default",
]
FORMATS = [
    "date",
    "time",
    "date-time",
    "duration",
    "email",
    "ipv4",
    "ipv6",
    "hostname",
    "uuid",
    "uri",
    "uri-reference",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
]
REFUSED = [
    "allOf",
    "oneOf",
    "not",
    "if-then-else",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedItems",
    "unevaluatedProperties",
    "dynamicRef",
]


@dataclass
class Row:
    name: str
    cases: int = 0
    refused_schema: int = 0  # instances whose schema is refused with a 400
    valid: int = 0
    valid_accepted: int = 0
    invalid: int = 0
    invalid_refused: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"| {self.name} | {self.cases} | {self.valid_accepted}/{self.valid} | "
            f"{self.invalid_refused}/{self.invalid} | {self.refused_schema} |"
        )


def compile_schema(compiler: ConstraintCompiler, schema) -> xgr.CompiledGrammar:
    tag = {"type": "structural_tag", "format": schema_content(schema)}  # as a tool's arguments
    return compiler.compile(Constraint(Kind.STRUCTURAL_TAG, json.dumps(tag)))


def accepts(grammar, stop: int, instance) -> bool:
    m = xgr.GrammarMatcher(grammar)
    return m.accept_string(json.dumps(instance)) and m.accept_token(stop) and m.is_terminated()


_PY_TYPES = {"string": (str,), "number": (int, float), "array": (list,), "object": (dict,)}


def typed_variant(schema, tests, keyword: str):
    """The suite mostly writes typed keywords without "type", which toolwire refuses (xgrammar
    would ignore them). The variant declares the type and keeps the instances of that type."""
    from toolwire.constraints.schemas import TYPED

    group = next((g for g, kws in TYPED.items() if keyword in kws), None)
    if group is None or not isinstance(schema, dict) or "type" in schema:
        return schema, tests
    kept = [
        t
        for t in tests
        if isinstance(t["data"], _PY_TYPES[group]) and not isinstance(t["data"], bool)
    ]
    return {**schema, "type": "number" if group == "number" else group}, kept


def check_group(compiler, stop, row: Row, schema, tests) -> None:
    row.cases += len(tests)
    if first_unsupported(schema) is not None:
        row.refused_schema += len(tests)
        return
    try:
        grammar = compile_schema(compiler, schema)
    except Exception as e:  # a schema xgrammar cannot compile is a 400 too
        row.refused_schema += len(tests)
        row.errors.append(str(e)[:80])
        return
    for t in tests:
        ok = accepts(grammar, stop, t["data"])
        if t["valid"]:
            row.valid += 1
            row.valid_accepted += ok
        else:
            row.invalid += 1
            row.invalid_refused += not ok


def run(data: pathlib.Path) -> tuple[list[Row], Row, list[Row]]:
    tok = model_source.load_tokenizer(model_source.resolve("embedded"))
    stop = tok.eos_token_id
    compiler = ConstraintCompiler(tok, len(tok), [stop], cache_size=8192)
    suite = data / "json-schema-test-suite" / "tests" / "draft2020-12"
    rows, refused = [], []
    for names, folder, out in (
        (CLAIMED, suite, rows),
        (FORMATS, suite / "optional" / "format", rows),
        (REFUSED, suite, refused),
    ):
        for name in names:
            is_format = folder.name == "format"
            row = Row(f"format: {name}" if is_format else name)
            for group in json.loads((folder / f"{name}.json").read_text()):
                schema, tests = group["schema"], group["tests"]
                if out is rows:
                    schema, tests = typed_variant(schema, tests, "format" if is_format else name)
                check_group(compiler, stop, row, schema, tests)
            out.append(row)
    glaive = Row("Glaive tool schemas")
    for f in sorted((data / "glaive-tool-schemas").glob("*.json")):
        doc = json.loads(f.read_text())
        check_group(compiler, stop, glaive, doc["schema"], doc["tests"])
    return rows, glaive, refused


def report(rows: list[Row], glaive: Row, refused: list[Row]) -> str:
    head = (
        "| keyword | cases | valid accepted | invalid refused | refused with 400 |\n"
        "|---|---|---|---|---|"
    )
    out = ["Claimed keywords (strict tools may use them):", head] + [r.line() for r in rows]
    out += ["", "Keywords refused with a 400 for strict tools:", head] + [r.line() for r in refused]
    out += ["", head, glaive.line()]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("data", type=pathlib.Path, help="the conformance folder (../shared/conformance)")
    args = p.parse_args()
    rows, glaive, refused = run(args.data)
    print(report(rows, glaive, refused))
    return 0


if __name__ == "__main__":
    sys.exit(main())
