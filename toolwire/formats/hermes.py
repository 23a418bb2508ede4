"""The Hermes tool format (Qwen2.5, Qwen3, Hermes, and the embedded SmolLM2).

Prompt: tools as JSON lines inside <tools></tools> in the system turn; past calls as
<tool_call>{"name": ..., "arguments": ...}</tool_call>; tool results as <tool_response> blocks
in a user turn. Output: the same <tool_call> blocks, one per call, separated by newlines.
"""

from __future__ import annotations

import json
from typing import Any

from .base import ToolFormat, arguments_text, calls_constraint, chosen_tools, schema_content
from .inputs import Tool, ToolChoice, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor
from .plain_render import PlainStyle

MARKER = "<tool_call>"
CLOSE = "}\n</tool_call>"

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

SYNTAX = CallSyntax(
    markers=(MARKER,),
    header=r'<tool_call>\s*\{\s*"name"\s*:\s*"(?P<name>[^"\\]*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*',
    close=r"\s*\}\s*</tool_call>",
)


def call_begin(name: str) -> str:
    return f'{MARKER}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '


STYLE = PlainStyle(
    tools_block=lambda tools: TOOLS_PREAMBLE + "".join(
        "\n" + json.dumps(t.openai_dict(), ensure_ascii=False) for t in tools) + TOOLS_POSTAMBLE,
    calls_text=lambda calls: "\n".join(
        call_begin(c["function"]["name"]) + arguments_text(c["function"]["arguments"]) + CLOSE
        for c in calls),
    result_text=lambda m, call: f"<tool_response>\n{message_text(m)}\n</tool_response>",
)


class HermesFormat(ToolFormat):
    name = "hermes"
    call_marker = MARKER
    result_markers = ("<tool_response", "</tool_response>")
    tag_prefixes = ("<tool", "</tool")

    def plain_style(self) -> PlainStyle:
        return STYLE

    def constraint(self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice,
                   parallel: bool) -> dict:
        tags = [{"type": "tag", "begin": call_begin(t.name),
                 "content": schema_content(schemas[t.name]), "end": CLOSE}
                for t in chosen_tools(tools, choice)]
        return calls_constraint(tags, [MARKER], "\n", choice, parallel)

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        return MarkedCallExtractor(SYNTAX, {t.name for t in tools})
