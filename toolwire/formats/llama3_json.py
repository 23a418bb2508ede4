"""Llama 3.1 / 3.2 / 3.3 JSON tool calls: {"name": ..., "parameters": {...}}, optionally after
<|python_tag|>, several separated by "; ". Tool results come back in the `ipython` role.

Custom tools (raw input) stay a 400 here: a call is a JSON object, so a raw payload would be a
JSON string, and a Lark or regex grammar over the raw text cannot be enforced through JSON's
escaping (xgrammar composes a grammar with a JSON string only as a whole-string regex pattern,
not a Lark grammar, and not with the escapes a model writes). Llama 3.1's one raw slot,
`<|python_tag|>` code for its built-in code interpreter, names no tool. Pythonic Llama (3.2, 4)
carries custom tools (pythonic.py)."""

from __future__ import annotations

import json
from typing import Any

from toolwire.vocabulary import ToolChoiceMode

from .base import ToolFormat, arguments_text, calls_constraint, schema_content
from .inputs import Tool, ToolChoice, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor
from .plain_render import PlainStyle

PYTHON_TAG = "<|python_tag|>"
JSON_START = '{"name"'
SEPARATOR = "; "

INSTRUCTIONS = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n\nRespond in the format "
    '{"name": function name, "parameters": dictionary of argument name and its value}. '
    "Do not use variables.\n\n"
)


def call_text(name: str, arguments: str, tag: str = "") -> str:
    return f'{tag}{{"name": {json.dumps(name)}, "parameters": {arguments_text(arguments)}}}'


def _syntax() -> CallSyntax:
    header = (
        r'(?:<\|python_tag\|>\s*)?\{\s*"name"\s*:\s*"(?P<name>[^"\\]*)"\s*,\s*'
        r'"(?:parameters|arguments)"\s*:\s*'
    )
    return CallSyntax(
        markers=(PYTHON_TAG, JSON_START),
        header=header,
        close=r"\s*\}",
        separator=r"\s*;\s*",
        terminator=None,
    )


class Llama3JsonFormat(ToolFormat):
    name = "llama3_json"
    call_marker = JSON_START

    def __init__(self, python_tag: bool = False):
        self.python_tag = python_tag  # the tokenizer has <|python_tag|>: calls start with it

    def plain_style(self) -> PlainStyle:
        tag = PYTHON_TAG if self.python_tag else ""
        return PlainStyle(
            tools_block=lambda ts: (
                INSTRUCTIONS + "\n\n".join(json.dumps(t.openai_dict(), indent=4) for t in ts)
            ),
            calls_text=lambda calls: SEPARATOR.join(
                call_text(c["function"]["name"], c["function"]["arguments"], tag) for c in calls
            ),
            result_text=lambda m, call: message_text(m),
            result_role="ipython",
            results_joiner=None,
        )

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tag = PYTHON_TAG if self.python_tag else ""
        tags = [
            {
                "type": "tag",
                "begin": f'{tag}{{"name": {json.dumps(t.name)}, "parameters": ',
                "content": schema_content(schemas[t.name]),
                "end": "}",
            }
            for t in choice.callable(tools)
        ]
        trigger = PYTHON_TAG if self.python_tag else JSON_START
        if choice.mode == ToolChoiceMode.NONE:
            return {"type": "any_text", "excludes": [PYTHON_TAG, JSON_START]}
        return calls_constraint(tags, [trigger], SEPARATOR, choice, parallel)

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        return MarkedCallExtractor(_syntax(), {t.name for t in tools})
