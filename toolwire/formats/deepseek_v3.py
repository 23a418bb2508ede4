"""DeepSeek V3 tool calls:

<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
```json
{...}
```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>

Results come back as <｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>...<｜tool▁output▁end｜>.
"""

from __future__ import annotations

import json
from typing import Any

from .base import (
    ToolFormat,
    arguments_text,
    block_constraint,
    call_tags,
)
from .inputs import Tool, ToolChoice, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor, extractor_for
from .plain_render import PlainStyle

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
OUTPUTS_BEGIN = "<｜tool▁outputs▁begin｜>"
OUTPUTS_END = "<｜tool▁outputs▁end｜>"
OUTPUT_BEGIN = "<｜tool▁output▁begin｜>"
OUTPUT_END = "<｜tool▁output▁end｜>"
SPECIAL_TOKENS = [
    CALLS_BEGIN,
    CALLS_END,
    CALL_BEGIN,
    CALL_END,
    SEP,
    OUTPUTS_BEGIN,
    OUTPUTS_END,
    OUTPUT_BEGIN,
    OUTPUT_END,
]


def call_begin(name: str) -> str:
    return f"{CALL_BEGIN}function{SEP}{name}\n```json\n"


CALL_CLOSE = f"\n```{CALL_END}"


def custom_begin(name: str) -> str:
    """A custom tool's call: the call's type slot says `custom`, its raw input follows the
    name's line up to <｜tool▁call▁end｜> (which the input may not contain)."""
    return f"{CALL_BEGIN}custom{SEP}{name}\n"


SYNTAX = CallSyntax(
    markers=(CALLS_BEGIN,),
    opener=r"<｜tool▁calls▁begin｜>",
    header=r"\s*<｜tool▁call▁begin｜>function<｜tool▁sep｜>(?P<name>[^\n<]+)\n```(?:json)?\n",
    close=r"\s*```\s*<｜tool▁call▁end｜>",
    separator=r"\s*",
    terminator=r"\s*<｜tool▁calls▁end｜>",
    custom_header=r"\s*<｜tool▁call▁begin｜>custom<｜tool▁sep｜>(?P<name>[^\n<]+)\n",
    custom_end=CALL_END,
)


def _definition(t: Tool) -> dict:
    """A function's definition; a custom tool's, with how its call is written."""
    if not t.custom:
        return t.openai_dict()["function"]
    return {
        **t.openai_dict()["custom"],
        "call": "custom" + SEP + t.name + " then the raw input (not JSON) on the next line",
    }


def _tools_block(tools: list[Tool]) -> str:
    return (
        "## Tools\n\n### Function\n\nYou have the following functions available:\n\n"
        + "\n".join(f"- `{t.name}`:\n```json\n{json.dumps(_definition(t))}\n```" for t in tools)
    )


STYLE = PlainStyle(
    tools_block=_tools_block,
    calls_text=lambda calls: (
        CALLS_BEGIN
        + "\n".join(
            custom_begin(c["custom"]["name"]) + c["custom"]["input"] + CALL_END
            if c.get("type") == "custom"
            else call_begin(c["function"]["name"])
            + arguments_text(c["function"]["arguments"])
            + CALL_CLOSE
            for c in calls
        )
        + CALLS_END
    ),
    result_text=lambda m, call: f"{OUTPUT_BEGIN}{message_text(m)}{OUTPUT_END}",
    results_joiner="",
)


class DeepSeekV3Format(ToolFormat):
    name = "deepseek_v3"
    call_marker = CALLS_BEGIN
    result_markers = (OUTPUT_BEGIN, OUTPUT_END)

    def plain_style(self) -> PlainStyle:
        return STYLE

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tags = call_tags(self, tools, schemas, choice, call_begin, CALL_CLOSE)
        return block_constraint(tags, CALLS_BEGIN, CALLS_END, "\n", choice, parallel)

    def custom_call(self, name: str) -> tuple[str, str]:
        return custom_begin(name), CALL_END

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        return extractor_for(SYNTAX, tools)
