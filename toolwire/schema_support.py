"""Which JSON Schema keywords the constraint compiler (xgrammar) enforces.

A strict tool or a strict response_format must be schema-exact, so a schema that uses a keyword
outside this list is refused with a 400 that names it, instead of being silently unenforced.
The conformance harness (tests/conformance) checks these claims against the JSON Schema Test
Suite.
"""

from __future__ import annotations

from typing import Any, Iterator

# Keywords that only annotate: nothing to enforce.
ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "$comment",
    "deprecated", "readOnly", "writeOnly", "$anchor",
})

# Keywords xgrammar's JSON-schema converter turns into grammar rules.
ENFORCED = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "prefixItems", "anyOf", "$ref", "$defs", "definitions", "pattern", "format",
    "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minItems", "maxItems", "minProperties", "maxProperties",
})

# String formats with a grammar of their own in xgrammar.
FORMATS = frozenset({
    "date", "time", "date-time", "duration", "email", "ipv4", "ipv6", "hostname", "uuid",
    "uri", "uri-reference", "uri-template", "json-pointer", "relative-json-pointer",
})

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
