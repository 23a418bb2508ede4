"""The Hermes tool format (Qwen2.5, Qwen3, Hermes, and the embedded SmolLM2).

Prompt: tools as JSON lines inside <tools></tools> in the system turn. With a template that
renders tools, past calls and results are the template's; with one that does not (STYLE below),
past calls and results are told in plain words. Output: <tool_call>{"name": ..., "arguments":
...}</tool_call> blocks, one per call, separated by newlines.
"""

from __future__ import annotations

import json
from typing import Any

from .base import (
    ToolFormat,
    arguments_text,
    call_tags,
    calls_constraint,
)
from .inputs import Tool, ToolChoice, call_name, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor, extractor_for
from .plain_render import PlainStyle

MARKER = "<tool_call>"
CLOSE = "}\n</tool_call>"
# A custom tool's call: <tool_call>\n<custom name="NAME">INPUT</custom>\n</tool_call>, the
# input raw (it may not contain CUSTOM_END: the extractor reads up to the first one).
CUSTOM_END = "</custom>\n</tool_call>"

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

CUSTOM_POSTAMBLE = (
    "\n\nFor a custom tool, write its raw input (not JSON) in its format:\n"
    '<tool_call>\n<custom name="<tool-name>"><input></custom>\n</tool_call>'
)

SYNTAX = CallSyntax(
    markers=(MARKER,),
    header=r'<tool_call>\s*\{\s*"name"\s*:\s*"(?P<name>[^"\\]*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*',
    close=r"\s*\}\s*</tool_call>",
    custom_header=r'<tool_call>\s*<custom name="(?P<name>[^"]*)">',
    custom_end=CUSTOM_END,
)


def call_begin(name: str) -> str:
    return f'{MARKER}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '


def narrated_calls(calls: list[dict]) -> str:
    return " ".join(
        f"Let me call {c['custom']['name']} with: {c['custom']['input']}"
        if c.get("type") == "custom"
        else f"Let me call {c['function']['name']}({arguments_text(c['function']['arguments'])})."
        for c in calls
    )


def narrated_result(message: dict, call: dict | None) -> str:
    name = call_name(call) if call else "tool"
    return f"The {name} tool returned: {message_text(message)}"


def custom_begin(name: str) -> str:
    return f'{MARKER}\n<custom name="{name}">'


# A finished tool round is told in plain words, not in <tool_call>/<tool_response> markup: for
# a model whose template knows no tools (the embedded SmolLM2) that is what gets an answer. Over
# bench/tool_rounds.py's 16 answers (8 rounds, tool_choice auto and none), answered with stop,
# grounded and clean: markup rounds 0/16 (it called again or wrote <script>/<json> blobs to the
# cap); results as plain user turns after markup calls 0/16; results in a `tool` role turn 4/16;
# llama.cpp's generic JSON rounds 0/16; plain calls and results 12/16, with the call's
# arguments 14/16, and without the tools block under tool_choice none 15/16. Calls under
# required, named and strict are still written in markup: the constraint forces it.
STYLE = PlainStyle(
    tools_block=lambda tools: (
        TOOLS_PREAMBLE
        + "".join("\n" + json.dumps(t.openai_dict(), ensure_ascii=False) for t in tools)
        + TOOLS_POSTAMBLE
        + (CUSTOM_POSTAMBLE if any(t.custom for t in tools) else "")
    ),
    calls_text=narrated_calls,
    result_text=narrated_result,
    tools_with_choice_none=False,
)


class HermesFormat(ToolFormat):
    name = "hermes"
    call_marker = MARKER
    result_markers = ("<tool_response", "</tool_response>")
    tag_prefixes = ("<tool", "</tool")

    def plain_style(self) -> PlainStyle:
        return STYLE

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tags = call_tags(self, tools, schemas, choice, call_begin, CLOSE)
        return calls_constraint(tags, [MARKER], "\n", choice, parallel)

    def custom_call(self, name: str) -> tuple[str, str]:
        return custom_begin(name), CUSTOM_END

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        return extractor_for(SYNTAX, tools)
