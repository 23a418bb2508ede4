"""Which JSON Schema keywords the constraint compiler (xgrammar) enforces.

A strict tool or a strict response_format must be schema-exact, so a schema that uses a keyword
outside this list is refused with a 400 that names it, instead of being silently unenforced.
The conformance harness (tests/conformance) checks these claims against the JSON Schema Test
Suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Keywords that only annotate: nothing to enforce.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)

# Keywords xgrammar's JSON-schema converter turns into grammar rules.
ENFORCED = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
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
    }
)

# String formats whose xgrammar grammar refuses every invalid instance of the JSON Schema Test
# Suite. date, time, date-time, hostname and ipv6 are left out: their grammars check the shape
# but let some invalid values through (2024-02-30, leap seconds, over-long labels).
FORMATS = frozenset(
    {
        "duration",
        "email",
        "ipv4",
        "uuid",
        "uri",
        "uri-reference",
        "uri-template",
        "json-pointer",
        "relative-json-pointer",
    }
)

# xgrammar applies these only where the subschema's own "type" names their type: without it
# they would be silently ignored (the conformance harness shows it), so strict schemas must say.
TYPED = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "number": frozenset(
        {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
    ),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems"}),
    "object": frozenset({"minProperties", "maxProperties"}),
}
_TYPE_NAMES = {
    "string": {"string"},
    "number": {"number", "integer"},
    "array": {"array"},
    "object": {"object"},
}

# Keywords whose value is a map of name -> subschema.
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
# Keywords whose value is one subschema, or a list of them.
_SCHEMA_VALUES = ("items", "additionalProperties")
_SCHEMA_LISTS = ("prefixItems", "anyOf")


def unsupported_keywords(schema: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield (json-pointer path, keyword) for every keyword that would not be enforced."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        yield path or "/", "<schema must be an object>"
        return
    declared = schema.get("type")
    for group, keywords in TYPED.items():
        used = sorted(keywords & schema.keys())
        if used and not (isinstance(declared, str) and declared in _TYPE_NAMES[group]):
            yield f"{path}/{used[0]}", f'{used[0]} without "type": "{group}"'
    declared_props = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in declared_props:  # xgrammar enforces required only for declared properties
            yield f"{path}/required", f"required property {name!r} not declared in properties"
            break
    if "multipleOf" in schema and not (
        declared == "integer" and isinstance(schema["multipleOf"], int)
    ):
        yield f"{path}/multipleOf", 'multipleOf other than an integer on "type": "integer"'
    ref = schema.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        yield f"{path}/$ref", f"$ref to {ref!r} (only local references, #/$defs/...)"
    for key, value in schema.items():
        here = f"{path}/{key}"
        if key in ANNOTATIONS:
            continue
        if key not in ENFORCED:
            yield here, key
            continue
        if key == "format" and value not in FORMATS:
            yield here, f"format: {value}"
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from unsupported_keywords(sub, f"{here}/{name}")
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            yield from unsupported_keywords(value, here)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            for i, sub in enumerate(value):
                yield from unsupported_keywords(sub, f"{here}/{i}")


def first_unsupported(schema: Any) -> tuple[str, str] | None:
    return next(unsupported_keywords(schema), None)
