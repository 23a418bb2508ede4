"""The REST request (pydantic) into the ChatService request proto that the orchestrator runs.

Shape only: what the proto cannot carry is refused here; what the request means is checked on
the proto, for REST and gRPC alike (toolwire/request/checks.py)."""

from __future__ import annotations

import json

from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.checks import TEXT_PARTS
from toolwire.request.errors import RequestError

from .openai_models import ChatCompletionRequest, Message, unsupported_parameters

_MODES = {
    "auto": common.ToolChoice.MODE_AUTO,
    "none": common.ToolChoice.MODE_NONE,
    "required": common.ToolChoice.MODE_REQUIRED,
}


def message_proto(m: Message) -> common.ChatMessage:
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
    for c in m.tool_calls or []:
        msg.tool_calls.append(
            common.ToolCall(
                id=c.id,
                type=c.type,
                function=common.FunctionCall(name=c.function.name, arguments=c.function.arguments),
            )
        )
    return msg


def to_proto(req: ChatCompletionRequest) -> chat_pb2.ChatCompletionRequest:
    bad = unsupported_parameters(req)
    if bad:
        raise RequestError(bad[1], param=bad[0], code="unsupported_parameter")
    out = chat_pb2.ChatCompletionRequest(model=req.model)
    out.messages.extend(message_proto(m) for m in req.messages)
    for t in req.tools or []:
        fn = t.function
        out.tools.append(
            common.FunctionTool(
                name=fn.name,
                description=fn.description or "",
                strict=bool(fn.strict),
                parameters_json=json.dumps(fn.parameters) if fn.parameters is not None else "",
            )
        )
    if isinstance(req.tool_choice, str):
        out.tool_choice.mode = _MODES[req.tool_choice]
    elif req.tool_choice is not None:
        out.tool_choice.function_name = req.tool_choice.function.name
    if req.parallel_tool_calls is not None:
        out.parallel_tool_calls = req.parallel_tool_calls
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
