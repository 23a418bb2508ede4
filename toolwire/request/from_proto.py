"""Between the wire protos (toolwire.common.v1, in toolwire.grpc_gen) and the plain forms the tool
formats use."""

from __future__ import annotations

import json

from toolwire.formats import Tool, ToolChoice
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.vocabulary import ToolChoiceMode


def custom_call_dict(c: common.ToolCall) -> dict:
    """A custom tool's call as OpenAI writes it, in a response and in history alike."""
    return {
        "id": c.id,
        "type": "custom",
        "custom": {"name": c.custom.name, "input": c.custom.input},
    }


def message_to_dict(m: common.ChatMessage) -> dict:
    d: dict = {"role": m.role}
    if m.HasField("content"):
        d["content"] = m.content
    elif m.content_parts:
        d["content"] = [{"type": p.type, "text": p.text} for p in m.content_parts]
    else:
        d["content"] = None
    for key in ("name", "tool_call_id", "refusal", "reasoning_content"):
        if m.HasField(key):
            d[key] = getattr(m, key)
    if m.tool_calls:
        d["tool_calls"] = [
            custom_call_dict(c)
            if c.type == "custom"
            else {
                "id": c.id,
                "type": c.type or "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in m.tool_calls
        ]
    return d


def tool_from_proto(t: common.FunctionTool) -> Tool:
    if t.type == "custom":
        f = t.custom_format
        grammar = (f.syntax, f.definition) if f.type == "grammar" else ("text", "")
        return Tool(name=t.name, description=t.description, custom=True, grammar=grammar)
    params = json.loads(t.parameters_json) if t.parameters_json else None
    return Tool(name=t.name, description=t.description, parameters=params, strict=t.strict)


_MODES = {
    common.ToolChoice.MODE_AUTO: ToolChoiceMode.AUTO,
    common.ToolChoice.MODE_NONE: ToolChoiceMode.NONE,
    common.ToolChoice.MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}


def choice_from_proto(c: common.ToolChoice, has_tools: bool) -> ToolChoice:
    which = c.WhichOneof("choice")
    if which == "function_name":
        return ToolChoice(ToolChoiceMode.NAMED, c.function_name)
    if which == "custom_name":
        return ToolChoice(ToolChoiceMode.NAMED, c.custom_name)
    if which == "allowed_tools":  # checks.py has refused any other mode
        a = c.allowed_tools
        return ToolChoice(_MODES.get(a.mode, ToolChoiceMode.AUTO), allowed=tuple(a.tool_names))
    default = ToolChoiceMode.AUTO if has_tools else ToolChoiceMode.NONE
    return ToolChoice(_MODES.get(c.mode, default))
