"""The decoding constraint of a request: tool_choice and response_format into an xgrammar
structural tag or JSON schema, checked by compiling it before any token is generated."""

from __future__ import annotations

import json
from typing import Any

from toolwire.constraints.schema_checks import check_response_format, check_strict_schema
from toolwire.constraints.schemas import first_unsupported
from toolwire.errors import RequestError, unsupported
from toolwire.formats import Tool, ToolChoice, ToolFormat
from toolwire.formats.base import schema_content
from toolwire.formats.reasoning import wrap_constraint
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.vocabulary import ErrorCode, ReasoningMode, ToolChoiceMode

NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}
ANY_OBJECT = {"type": "object"}


def enforceable_schema(schema: Any, strict: bool, param: str) -> Any:
    """The schema the grammar will enforce. Strict schemas must be enforceable exactly; a
    non-strict schema with keywords the compiler ignores falls back to any JSON object."""
    bad = first_unsupported(schema)
    if bad is None:
        return schema
    if strict:
        check_strict_schema(schema, param)  # refuses it
    return ANY_OBJECT


def custom_content(tool: Tool) -> dict:
    """A custom tool's input as structural-tag content: free text, or its regex or Lark
    grammar (Lark as xgrammar's EBNF; checks.py has parsed both)."""
    syntax, definition = tool.grammar
    if syntax == "regex":
        return {"type": "regex", "pattern": definition}
    if syntax == "lark":
        from toolwire.constraints import xgrammar_core as xgr

        return {"type": "grammar", "grammar": str(xgr.Grammar.from_lark(definition))}
    return {"type": "any_text"}


def check_custom_tools(fmt: ToolFormat, tools: list[Tool]) -> None:
    """A family without a place for a custom call's raw input refuses custom tools."""
    for i, t in enumerate(tools):
        if t.custom and fmt.custom_call(t.name) is None:
            raise unsupported(
                f"tools[{i}]",
                f"custom tools are not supported with the {fmt.name} tool format (its calls "
                "have no place for raw input); use a function tool",
            )


def tool_schemas(fmt: ToolFormat, tools: list[Tool]) -> dict[str, Any]:
    """Each tool's constraint: a function's enforceable schema, a custom tool's input content."""
    schemas = {}
    for i, t in enumerate(tools):
        if t.custom:
            schemas[t.name] = custom_content(t)
            continue
        param = f"tools[{i}].function.parameters"
        schema = enforceable_schema(
            t.parameters if t.parameters is not None else NO_PARAMETERS, t.strict, param
        )
        why = fmt.unenforceable(schema) if t.strict else None
        if why:
            raise RequestError(
                f"Invalid schema for {param}: the {fmt.name} tool format cannot "
                f"enforce it in strict mode ({why}).",
                param=param,
                code=ErrorCode.UNSUPPORTED_SCHEMA_KEYWORD,
            )
        schemas[t.name] = schema
    return schemas


def build_constraint(
    fmt: ToolFormat,
    tools: list[Tool],
    choice: ToolChoice,
    parallel: bool,
    response_format: common.ResponseFormat,
    reasoning: str = ReasoningMode.NONE,
    has_tool_results: bool = False,
) -> common.Constraint | None:
    """The request's constraint; with `reasoning`, free thinking runs first (formats.reasoning).
    `has_tool_results`: the prompt shows tool results, whose markup free text may not echo."""
    text_schema = response_schema(response_format)
    check_custom_tools(fmt, tools)
    if tools and choice.mode != ToolChoiceMode.NONE:
        schemas = tool_schemas(fmt, tools)
        if text_schema is not None and choice.mode == ToolChoiceMode.AUTO:
            # A text answer must follow response_format; or the model calls tools.
            forced = fmt.constraint(
                tools,
                schemas,
                ToolChoice(ToolChoiceMode.REQUIRED, allowed=choice.allowed),
                parallel,
            )
            return _tag(
                {"type": "or", "elements": [forced, fmt.answer(schema_content(text_schema))]},
                reasoning,
            )
        return _tag(
            ban_in_text(fmt.constraint(tools, schemas, choice, parallel), fmt.result_markers),
            reasoning,
        )
    if text_schema is not None:
        if reasoning or fmt.frames_all_output:
            return _tag(fmt.answer(schema_content(text_schema)), reasoning)
        return common.Constraint(json_schema=json.dumps(text_schema))
    if tools:  # tool_choice none: the call marker is banned (no schema is used)
        return _tag(
            ban_in_text(
                fmt.constraint(tools, {t.name: ANY_OBJECT for t in tools}, choice, parallel),
                fmt.result_markers + fmt.tag_prefixes,
            ),
            reasoning,
        )
    if has_tool_results and fmt.result_markers:  # no tools offered: no tag is the model's
        return _tag(
            ban_in_text({"type": "any_text"}, fmt.result_markers + fmt.tag_prefixes), reasoning
        )
    return None


def ban_in_text(constraint: dict, markers: tuple[str, ...]) -> dict:
    """Free text (tool_choice auto or none) may not contain these markers."""
    if markers and constraint.get("type") in ("any_text", "triggered_tags"):
        excludes = list(constraint.get("excludes", []))
        constraint = dict(constraint, excludes=excludes + [m for m in markers if m not in excludes])
    return constraint


def response_schema(rf: common.ResponseFormat) -> Any | None:
    check_response_format(rf)  # a known type; json_schema with its schema
    if rf.type in ("", "text"):
        return None
    if rf.type == "json_object":
        return ANY_OBJECT
    return enforceable_schema(
        json.loads(rf.schema_json), rf.strict, "response_format.json_schema.schema"
    )


def _tag(fmt: dict, reasoning: str) -> common.Constraint:
    return common.Constraint(
        structural_tag=json.dumps(
            {"type": "structural_tag", "format": wrap_constraint(fmt, reasoning)}
        )
    )
