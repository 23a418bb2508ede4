"""The checks of a request that need to know what the constraints can enforce: a strict schema
with a keyword constrained decoding would not enforce is refused, not half-served.

They live beside the constraints that own `first_unsupported` so that toolwire/request/ (which
runs them) and toolwire/constraints/build.py (which runs them again on what it compiles) both
import downwards."""

from __future__ import annotations

import json
import re
from typing import Any

from toolwire.constraints.schemas import first_unsupported
from toolwire.errors import RequestError, invalid_value
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.vocabulary import ErrorCode

RESPONSE_FORMATS = ("text", "json_object", "json_schema")
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"  # a function's and a response_format's name
_NAME = re.compile(NAME_PATTERN)


def check_response_format(rf: common.ResponseFormat) -> None:
    if rf.type and rf.type not in RESPONSE_FORMATS:
        raise invalid_value(
            "response_format.type", f"{rf.type!r} is not one of {', '.join(RESPONSE_FORMATS)}"
        )
    if rf.type != "json_schema":
        return
    if rf.name and not _NAME.match(rf.name):
        raise invalid_value(
            "response_format.json_schema.name",
            f"{rf.name!r} must be 1 to 64 letters, digits, underscores or dashes",
        )
    if not rf.schema_json:
        raise RequestError(
            "response_format.json_schema.schema is required",
            param="response_format.json_schema.schema",
        )


def check_strict_schema(schema: Any, param: str) -> None:
    """Refuse a strict schema with a keyword that constrained decoding would not enforce."""
    bad = first_unsupported(schema)
    if bad is not None:
        path, keyword = bad
        raise RequestError(
            f"Invalid schema for {param}: '{keyword}' (at {path}) cannot be enforced by "
            "toolwire's constrained decoding, so strict mode cannot guarantee it. Remove it "
            "or set strict to false.",
            param=param,
            code=ErrorCode.UNSUPPORTED_SCHEMA_KEYWORD,
        )


def check_schema_text(text: str, param: str, strict: bool) -> None:
    try:
        schema = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise RequestError(f"'{param}' is not valid JSON: {e}", param=param) from None
    if strict:
        check_strict_schema(schema, param)
