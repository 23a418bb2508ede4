"""Every semantic check of a chat request, written once and run on the proto for REST and gRPC
alike.

The gateway runs `check_chat_request` on the ChatService request whichever surface it came in on
(a REST body is converted to that proto first; gateway/rest_to_proto.py only changes its
shape), and the template service runs `check_render` on what reaches it, for callers that reach
it directly. So a rule has one message, and a gRPC client cannot get past a check that a REST
client meets. Left elsewhere, on purpose: REST parameters the proto cannot carry (n > 1,
logprobs, unknown names: gateway/openai_models.py), sizes (limits.py, run from here),
the served model (the orchestrator knows it) and what needs the rendered prompt or the tool
format (context length, a format's own limits on strict schemas).
"""

from __future__ import annotations

import json
import re
from typing import Any

from toolwire.constraints.schema_checks import (
    NAME_PATTERN,
    check_response_format,
    check_schema_text,
)
from toolwire.errors import RequestError, invalid_value, unsupported
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.limits import Limits, check_limits
from toolwire.vocabulary import ErrorCode

ROLES = ("system", "developer", "user", "assistant", "tool")
TEXT_PARTS = ("text", "refusal")  # content part types served; the rest is refused
# OpenAI's reasoning_effort values (the SDK's ReasoningEffort); formats/thinking.py maps them.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
GRAMMAR_SYNTAXES = ("lark", "regex")  # a custom tool's grammar
TEMPERATURE = (0.0, 2.0)  # inclusive
TOP_P = (0.0, 1.0)  # above the first, up to the second
# A stream interval's bounds: beyond these a client would wait seconds between chunks.
STREAM_INTERVAL_TOKENS = 256
STREAM_INTERVAL_MS = 1000
_NAME = re.compile(NAME_PATTERN)


def check_chat_request(req: chat_pb2.ChatCompletionRequest, limits: Limits) -> None:
    """The gateway's check of one request, in the order a client would fix it."""
    check_conversation(req)
    check_sampling(req)
    check_limits(req, limits)  # sizes before the schema checks walk any schema
    check_schemas(req)


def check_render(req) -> None:
    """The template service's check of a RenderChatRequest: the same rules for its fields."""
    check_conversation(req)
    check_schemas(req)


def check_conversation(req) -> None:
    """messages, tools, tool_choice and response_format (fields both requests carry)."""
    check_messages(req.messages)
    check_tools(req.tools)
    check_tool_choice(req.tool_choice, req.tools)
    check_response_format(req.response_format)
    if req.HasField("reasoning_effort") and req.reasoning_effort not in REASONING_EFFORTS:
        raise invalid_value("reasoning_effort", f"must be one of {', '.join(REASONING_EFFORTS)}")


def check_messages(messages) -> None:
    if not messages:
        raise invalid_value("messages", "at least one message is required")
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise invalid_value(
                f"messages[{i}].role", f"{m.role!r} is not one of {', '.join(ROLES)}"
            )
        for j, part in enumerate(m.content_parts):
            if part.type not in TEXT_PARTS:
                raise unsupported(
                    f"messages[{i}].content[{j}].type",
                    f"content parts of type {part.type!r} are not supported; only text",
                )
        if m.role == "tool" and not m.tool_call_id:
            raise RequestError(
                f"messages[{i}]: a tool message needs tool_call_id",
                param=f"messages[{i}].tool_call_id",
            )
        for j, call in enumerate(m.tool_calls):
            if call.type == "custom":  # raw input: any text
                continue
            if not isinstance(_json(call.function.arguments or "{}"), dict):
                param = f"messages[{i}].tool_calls[{j}].function.arguments"
                raise RequestError(f"{param} must be a JSON object (as a string)", param=param)


def check_tools(tools) -> None:
    names: set[str] = set()
    for i, t in enumerate(tools):
        if t.type not in ("", "function", "custom"):
            raise invalid_value(f"tools[{i}].type", f"{t.type!r} is not one of function, custom")
        if t.type == "custom":
            check_custom_format(t.custom_format, f"tools[{i}].custom.format")
        param = f"tools[{i}].{'custom' if t.type == 'custom' else 'function'}.name"
        if not _NAME.match(t.name):
            raise invalid_value(
                param, f"{t.name!r} must be 1 to 64 letters, digits, underscores or dashes"
            )
        if t.name in names:
            raise RequestError(f"tools[{i}]: duplicate function name {t.name!r}", param=param)
        names.add(t.name)


def check_custom_format(f: common.CustomFormat, param: str) -> None:
    """A custom tool's format: text, or a Lark or regex grammar (parsed by check_grammar)."""
    if f.type in ("", "text"):
        return
    if f.type != "grammar":
        raise invalid_value(f"{param}.type", f"{f.type!r} is not one of text, grammar")
    if f.syntax not in GRAMMAR_SYNTAXES:
        raise invalid_value(
            f"{param}.grammar.syntax", f"{f.syntax!r} is not one of {', '.join(GRAMMAR_SYNTAXES)}"
        )
    if not f.definition.strip():
        raise invalid_value(f"{param}.grammar.definition", "the grammar definition is empty")


def check_grammar(f: common.CustomFormat, param: str) -> None:
    """A custom tool's grammar parses, in xgrammar's own reading (the one the constraint is
    built with); run after the size limits (limits.py). Compile time: the template's compile
    pool's deadline (--grammar-timeout)."""
    if f.type != "grammar":
        return
    param = f"{param}.grammar.definition"
    from toolwire.constraints import xgrammar_core as xgr

    try:
        (xgr.Grammar.from_lark if f.syntax == "lark" else xgr.Grammar.from_regex)(f.definition)
    except Exception as e:  # xgrammar's parse error, with its position
        why = str(e).split("\n")[0]
        why = why.split("] ", 1)[-1] if why.startswith("[") else why  # its log prefix
        raise RequestError(
            f"Invalid {f.syntax} grammar in '{param}': {why}",
            param=param,
            code=ErrorCode.INVALID_GRAMMAR,
        ) from None


def check_tool_choice(choice: common.ToolChoice, tools) -> None:
    which = choice.WhichOneof("choice")
    if which is None or (which == "mode" and choice.mode == common.ToolChoice.MODE_UNSPECIFIED):
        return
    if not tools:
        raise RequestError(
            "tool_choice is only allowed when tools are specified", param="tool_choice"
        )
    functions = {t.name for t in tools if t.type != "custom"}
    customs = {t.name for t in tools if t.type == "custom"}
    if which == "function_name" and choice.function_name not in functions:
        name = choice.function_name
        raise RequestError(
            _other_kind(name, "custom")
            if name in customs
            else f"tool_choice names function {name!r}, which is not in tools",
            param="tool_choice",
        )
    if which == "custom_name" and choice.custom_name not in customs:
        name = choice.custom_name
        raise RequestError(
            _other_kind(name, "function")
            if name in functions
            else f"tool_choice names custom tool {name!r}, which is not in tools",
            param="tool_choice",
        )
    if which == "allowed_tools":
        check_allowed_tools(choice.allowed_tools, functions | customs)


def _other_kind(name: str, kind: str) -> str:
    # A client that names every tool as a function (LangChain's string tool_choice does) is
    # told how to name this one.
    named = "custom tool" if kind == "function" else "function"
    return (
        f"tool_choice names {named} {name!r}, but {name!r} is a "
        f"{'custom tool' if kind == 'custom' else 'function'}: name it with "
        f'{{"type": "{kind}", "{kind}": {{"name": "{name}"}}}}'
    )


def check_allowed_tools(allowed: common.ToolChoice.AllowedTools, names: set[str]) -> None:
    """tool_choice {"type": "allowed_tools"}: mode auto or required, a non-empty subset of
    the request's tools."""
    if allowed.mode not in (common.ToolChoice.MODE_AUTO, common.ToolChoice.MODE_REQUIRED):
        raise invalid_value("tool_choice.allowed_tools.mode", "must be 'auto' or 'required'")
    if not allowed.tool_names:
        raise invalid_value("tool_choice.allowed_tools.tools", "at least one tool is required")
    for i, name in enumerate(allowed.tool_names):
        if name not in names:
            raise invalid_value(
                f"tool_choice.allowed_tools.tools[{i}]",
                f"names tool {name!r}, which is not in tools",
            )


def check_sampling(req: chat_pb2.ChatCompletionRequest) -> None:
    low, high = TEMPERATURE
    if req.HasField("temperature") and not low <= req.temperature <= high:
        raise invalid_value(
            "temperature", f"{req.temperature:g} is not between {low:g} and {high:g}"
        )
    low, high = TOP_P
    if req.HasField("top_p") and not low < req.top_p <= high:
        raise invalid_value("top_p", f"{req.top_p:g} is not above {low:g} and at most {high:g}")
    if req.HasField("max_completion_tokens") and req.max_completion_tokens < 1:
        raise invalid_value("max_tokens", "at least 1 token is required")
    if req.HasField("stream_interval"):
        check_stream_interval(req.stream_interval)


def check_stream_interval(si: chat_pb2.StreamInterval) -> None:
    if si.tokens > STREAM_INTERVAL_TOKENS:
        raise invalid_value("stream_interval.tokens", f"at most {STREAM_INTERVAL_TOKENS} tokens")
    if si.ms > STREAM_INTERVAL_MS:
        raise invalid_value("stream_interval.ms", f"at most {STREAM_INTERVAL_MS} ms")


def check_schemas(req) -> None:
    """Each schema is JSON, and a strict one is enforceable exactly (toolwire/constraints/schemas.py)."""
    for i, t in enumerate(req.tools):
        if t.type == "custom":
            check_grammar(t.custom_format, f"tools[{i}].custom.format")
        if t.parameters_json:
            check_schema_text(t.parameters_json, f"tools[{i}].function.parameters", t.strict)
    rf = req.response_format
    if rf.type == "json_schema":
        check_schema_text(rf.schema_json, "response_format.json_schema.schema", rf.strict)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
