"""DeepSeek V3.1 tool calls (vLLM's and SGLang's `deepseek_v31` parser; V3.1-Terminus and
V3.2-Exp write the same):

<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>

Unlike V3 (deepseek_v3.py) there is no `function` type slot and no ```json fence: the raw JSON
arguments sit between the separator and the call's end, and calls are chained with no separator
(the template says so). Results come back as <｜tool▁output▁begin｜>...<｜tool▁output▁end｜>.
V3.1 thinks on request (`reasoning_effort` is its template's `thinking` switch): its generation
prompt ends in `<think>` (thinking) or `</think>` (not); reasoning.py reads which from the prompt.

A custom tool's call puts its raw input where the JSON goes, up to <｜tool▁call▁end｜> (which
the input may not contain); the extractor tells a custom call from a function call by its name.

The constraint is built like deepseek_v3's (one calls block, its calls inside) rather than with
`xgrammar.get_model_structural_tag("deepseek_v3_1")`, which knows no allowed_tools subset, no
custom tools and no ban of result markup in free text, and adds reasoning itself.
"""

from __future__ import annotations

import json
from typing import Any

from .base import ToolFormat, arguments_text, block_constraint, call_tags
from .deepseek_v3 import (
    CALL_BEGIN,
    CALL_END,
    CALLS_BEGIN,
    CALLS_END,
    OUTPUT_BEGIN,
    OUTPUT_END,
    SEP,
)
from .inputs import Tool, ToolChoice, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor, extractor_for
from .plain_render import PlainStyle

# Detection: a V3.1 template writes NAME<｜tool▁sep｜> with no `function` slot before it.
V3_HINT = "function" + SEP


def call_begin(name: str) -> str:
    return f"{CALL_BEGIN}{name}{SEP}"


_HEADER = r"\s*<｜tool▁call▁begin｜>(?P<name>[^<\n]+?)<｜tool▁sep｜>"
SYNTAX = CallSyntax(
    markers=(CALLS_BEGIN,),
    opener=r"<｜tool▁calls▁begin｜>",
    header=_HEADER,
    close=r"\s*<｜tool▁call▁end｜>",
    separator=r"\s*",
    terminator=r"\s*<｜tool▁calls▁end｜>",
    custom_header=_HEADER,
    custom_end=CALL_END,
)


def tools_block(tools: list[Tool]) -> str:
    """The V3.1 template's tool section (one `###` entry a tool, then the format rule)."""
    out = "## Tools\nYou have access to the following tools:\n"
    for t in tools:
        if t.custom:
            d = t.openai_dict()["custom"]
            out += (
                f"\n### {t.name}\nDescription: {t.description}\n\nInput: raw text (not JSON) in "
                f"this format: {json.dumps(d['format'])}\n"
            )
            continue
        fn = t.openai_dict()["function"]
        out += (
            f"\n### {t.name}\nDescription: {t.description}\n\n"
            f"Parameters: {json.dumps(fn['parameters'], ensure_ascii=False)}\n"
        )
    return out + (
        "\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
        f"{CALLS_BEGIN}{CALL_BEGIN}tool_call_name{SEP}tool_call_arguments{CALL_END}"
        "{{additional_tool_calls}}" + CALLS_END + "\n\nWhere:\n\n- `tool_call_name` must be an "
        "exact match to one of the available tools\n- `tool_call_arguments` must be valid JSON "
        "that strictly follows the tool's Parameters Schema\n- For multiple tool calls, chain "
        "them directly without separators or spaces\n"
    )


def calls_text(calls: list[dict]) -> str:
    """Past calls (OpenAI dicts) as the model writes them."""
    return (
        CALLS_BEGIN
        + "".join(
            call_begin(c["custom"]["name"]) + c["custom"]["input"] + CALL_END
            if c.get("type") == "custom"
            else call_begin(c["function"]["name"])
            + arguments_text(c["function"]["arguments"])
            + CALL_END
            for c in calls
        )
        + CALLS_END
    )


STYLE = PlainStyle(
    tools_block=tools_block,
    calls_text=calls_text,
    result_text=lambda m, call: f"{OUTPUT_BEGIN}{message_text(m)}{OUTPUT_END}",
    results_joiner="",
)


class DeepSeekV31Format(ToolFormat):
    name = "deepseek_v31"
    call_marker = CALLS_BEGIN
    result_markers = (OUTPUT_BEGIN, OUTPUT_END)
    template_misreads_custom = True  # V3.1's template declares every tool as a function

    def plain_style(self) -> PlainStyle:
        return STYLE

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tags = call_tags(self, tools, schemas, choice, call_begin, CALL_END)
        return block_constraint(tags, CALLS_BEGIN, CALLS_END, "", choice, parallel)

    def custom_call(self, name: str) -> tuple[str, str]:
        return call_begin(name), CALL_END

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        return extractor_for(SYNTAX, tools)
