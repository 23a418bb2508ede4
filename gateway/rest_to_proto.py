"""The REST request (pydantic) into the ChatService request proto that the orchestrator runs.

Shape only: what the proto cannot carry is refused here; what the request means is checked on
the proto, for REST and gRPC alike (toolwire/request/checks.py)."""

from __future__ import annotations

import json

from toolwire.errors import RequestError, unsupported
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.checks import TEXT_PARTS
from toolwire.vocabulary import ToolChoiceMode

from .openai_models import (
    AllowedToolChoice,
    ChatCompletionRequest,
    CustomCall,
    CustomTool,
    CustomToolChoice,
    FunctionTool,
    Message,
    unsupported_parameters,
)

_MODES: dict[str, common.ToolChoice.Mode] = {
    ToolChoiceMode.AUTO: common.ToolChoice.MODE_AUTO,
    ToolChoiceMode.NONE: common.ToolChoice.MODE_NONE,
    ToolChoiceMode.REQUIRED: common.ToolChoice.MODE_REQUIRED,
}


def message_proto(m: Message, i: int = 0) -> common.ChatMessage:
    msg = common.ChatMessage(role=m.role)
    if isinstance(m.content, str):
        msg.content = m.content
    elif isinstance(m.content, list):
        # Served part types are text to the prompt; others reach the check, which names them.
        msg.content_parts.extend(
            common.ContentPart(type="text" if p.type in TEXT_PARTS else p.type, text=p.text or "")
            for p in m.content
        )
    for key in ("name", "tool_call_id", "refusal", "reasoning_content"):
        if getattr(m, key) is not None:
            setattr(msg, key, getattr(m, key))
    for j, c in enumerate(m.tool_calls or []):
        body = c.custom if c.type == "custom" else c.function
        if body is None:
            param = f"messages[{i}].tool_calls[{j}].{c.type}"
            raise RequestError(f"'{param}' is required for a {c.type} call", param=param)
        if isinstance(body, CustomCall):
            call = common.ToolCall(
                id=c.id, type="custom", custom=common.CustomCall(name=body.name, input=body.input)
            )
        else:
            call = common.ToolCall(
                id=c.id,
                type="function",
                function=common.FunctionCall(name=body.name, arguments=body.arguments),
            )
        msg.tool_calls.append(call)
    return msg


def tool_proto(t: FunctionTool | CustomTool) -> common.FunctionTool:
    if isinstance(t, CustomTool):
        cu, out = t.custom, common.FunctionTool(type="custom")
        out.name, out.description = cu.name, cu.description or ""
        if cu.format is not None:
            out.custom_format.type = cu.format.type
            if cu.format.grammar is not None:
                out.custom_format.syntax = cu.format.grammar.syntax
                out.custom_format.definition = cu.format.grammar.definition
        return out
    fn = t.function
    return common.FunctionTool(
        name=fn.name,
        description=fn.description or "",
        strict=bool(fn.strict),
        parameters_json=json.dumps(fn.parameters) if fn.parameters is not None else "",
    )


def _allowed_name(entry: dict) -> str:
    """An allowed_tools entry's name: {"type": "function", "function": {"name"}} or the same
    with "custom"; anything else is "" (refused by the check as not in tools)."""
    body = entry.get(entry.get("type")) if isinstance(entry.get("type"), str) else None
    name = body.get("name") if isinstance(body, dict) else None
    return name if isinstance(name, str) else ""


def tool_choice_proto(choice, out: common.ToolChoice) -> None:
    if isinstance(choice, str):
        out.mode = _MODES[choice]
    elif isinstance(choice, CustomToolChoice):
        out.custom_name = choice.custom.name
    elif isinstance(choice, AllowedToolChoice):
        a = choice.allowed_tools
        # An unknown mode stays unspecified: the check refuses it, for gRPC alike.
        out.allowed_tools.mode = _MODES.get(a.mode, common.ToolChoice.MODE_UNSPECIFIED)
        out.allowed_tools.tool_names.extend(_allowed_name(e) for e in a.tools)
    elif choice is not None:
        out.function_name = choice.function.name


def to_proto(req: ChatCompletionRequest) -> chat_pb2.ChatCompletionRequest:
    bad = unsupported_parameters(req)
    if bad:
        raise unsupported(bad[0], bad[1])
    out = chat_pb2.ChatCompletionRequest(model=req.model)
    out.messages.extend(message_proto(m, i) for i, m in enumerate(req.messages))
    out.tools.extend(tool_proto(t) for t in req.tools or [])
    tool_choice_proto(req.tool_choice, out.tool_choice)
    if req.parallel_tool_calls is not None:
        out.parallel_tool_calls = req.parallel_tool_calls
    if req.reasoning_effort is not None:
        out.reasoning_effort = req.reasoning_effort
    rf = req.response_format
    if rf is not None:
        out.response_format.type = rf.type
        if rf.type == "json_schema":
            if rf.json_schema is None:
                raise RequestError(
                    "response_format.json_schema is required for type json_schema",
                    param="response_format.json_schema",
                )
            out.response_format.name = rf.json_schema.name
            out.response_format.strict = bool(rf.json_schema.strict)
            out.response_format.schema_json = json.dumps(rf.json_schema.schema_ or {})
    for key in ("temperature", "top_p"):
        if getattr(req, key) is not None:
            setattr(out, key, getattr(req, key))
    if req.seed is not None:
        out.seed = req.seed % 2**64  # OpenAI's seed is signed; the same bits as uint64
    out.stop.extend([req.stop] if isinstance(req.stop, str) else (req.stop or []))
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if limit is not None:
        out.max_completion_tokens = limit
    out.include_usage = bool(req.stream_options and req.stream_options.include_usage)
    if req.stream_options is not None and not req.stream:
        raise RequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    return out
