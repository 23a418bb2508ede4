"""Kimi K2 / K2.5 tool calls (vLLM's and SGLang's `kimi_k2` parser):

<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{...}
<|tool_call_end|>...<|tool_calls_section_end|>

IDX counts the calls of the whole conversation, and `functions.NAME:IDX` is the call's id in
Kimi's template: past calls and the results that answer them are rendered with ids mapped to
that form (the client's `call_...` ids never reach the model; the response's ids are toolwire's
`call_` + 24 as always). Results come back as `## Return of functions.NAME:IDX` turns. Kimi K2.5
thinks first (<think>, reasoning.py; `reasoning_effort` is its template's `thinking` switch);
K2 does not.

The constraint holds IDX to decimal digits (at most four, so a small model cannot spin on them)
between the name's colon and <|tool_call_argument_begin|>; it is built like the other block
families' rather than with `xgrammar.get_model_structural_tag("kimi")`, which knows no
allowed_tools subset, no custom tools and no ban of result markup in free text. A custom tool's
call puts its raw input where the JSON goes, up to <|tool_call_end|>.
"""

from __future__ import annotations

import json
from typing import Any

from toolwire.vocabulary import ToolChoiceMode

from .base import ToolFormat, arguments_text, block_constraint, schema_content
from .inputs import Tool, ToolChoice, call_name, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor, extractor_for
from .plain_render import PlainStyle

SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
ARGS_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"
RESULT_PREFIX = "## Return of "
INDEX = {"type": "regex", "pattern": r"(0|[1-9][0-9]{0,3})"}


def call_id(name: str, index: int) -> str:
    return f"functions.{name}:{index}"


_HEADER = (
    r"\s*<\|tool_call_begin\|>\s*(?:functions\.)?(?P<name>[^:<\s]+):[0-9]+\s*"
    r"<\|tool_call_argument_begin\|>"
)
SYNTAX = CallSyntax(
    markers=(SECTION_BEGIN,),
    opener=r"<\|tool_calls_section_begin\|>",
    header=_HEADER,
    close=r"\s*<\|tool_call_end\|>",
    separator=r"\s*",
    terminator=r"\s*<\|tool_calls_section_end\|>",
    custom_header=_HEADER,
    custom_end=CALL_END,
)


def with_kimi_ids(messages: list[dict]) -> list[dict]:
    """Past calls' ids as Kimi's template expects them (functions.NAME:IDX, IDX counting every
    call of the conversation), and each tool result's tool_call_id mapped alike. A custom call
    goes to the template as a function call whose arguments are its raw input (the template
    writes a string's arguments as they are)."""
    ids: dict[str, str] = {}
    out, n = [], 0
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                new = call_id(call_name(c), n)
                n += 1
                ids[c.get("id") or ""] = new
                if c.get("type") == "custom":  # also as a function, for the template
                    fn = {"name": c["custom"]["name"], "arguments": c["custom"]["input"]}
                    calls.append({**c, "id": new, "function": fn})
                else:
                    calls.append({**c, "id": new})
            m = {**m, "tool_calls": calls}
        elif m.get("role") == "tool":
            m = {**m, "tool_call_id": ids.get(m.get("tool_call_id") or "", m.get("tool_call_id"))}
        out.append(m)
    return out


def tools_block(tools: list[Tool]) -> str:
    return (
        "# Tools\n\nYou may call these tools; the declarations are JSON:\n"
        + "\n".join(json.dumps(t.openai_dict(), ensure_ascii=False) for t in tools)
        + f"\n\nTo call tools, write {SECTION_BEGIN}{CALL_BEGIN}functions.<tool-name>:<index>"
        f"{ARGS_BEGIN}<arguments JSON>{CALL_END}...{SECTION_END} (a custom tool's raw input "
        "goes where the JSON goes)."
    )


def calls_text(calls: list[dict]) -> str:
    """Past calls (ids already mapped by with_kimi_ids) as the model writes them."""
    return (
        SECTION_BEGIN
        + "".join(
            CALL_BEGIN
            + c["id"]
            + ARGS_BEGIN
            + (
                c["function"]["arguments"]
                if c.get("type") == "custom"
                else arguments_text(c["function"]["arguments"])
            )
            + CALL_END
            for c in calls
        )
        + SECTION_END
    )


STYLE = PlainStyle(
    tools_block=tools_block,
    calls_text=calls_text,
    result_text=lambda m, call: f"{RESULT_PREFIX}{m.get('tool_call_id') or ''}\n{message_text(m)}",
)


class KimiK2Format(ToolFormat):
    name = "kimi_k2"
    call_marker = SECTION_BEGIN
    result_markers = (RESULT_PREFIX,)
    turn_end_tokens = ("<|im_end|>",)  # Kimi's tokenizer eos is [EOS]; a turn ends with this

    def render(
        self,
        tokenizer: Any,
        messages: list[dict],
        tools: list[Tool],
        choice_mode: ToolChoiceMode = ToolChoiceMode.AUTO,
        template_kwargs: dict | None = None,
    ) -> str:
        return super().render(
            tokenizer, with_kimi_ids(messages), tools, choice_mode, template_kwargs
        )

    def plain_style(self) -> PlainStyle:
        return STYLE

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tags = [
            {
                "type": "tag",
                "begin": f"{CALL_BEGIN}functions.{t.name}:",
                "content": {
                    "type": "sequence",
                    "elements": [
                        INDEX,
                        {"type": "const_string", "value": ARGS_BEGIN},
                        schemas[t.name] if t.custom else schema_content(schemas[t.name]),
                    ],
                },
                "end": CALL_END,
            }
            for t in choice.callable(tools)
        ]
        return block_constraint(tags, SECTION_BEGIN, SECTION_END, "", choice, parallel)

    def custom_call(self, name: str) -> tuple[str, str]:
        """The first call's wrapping (index 0); the constraint takes any index (`constraint`)."""
        return f"{CALL_BEGIN}{call_id(name, 0)}{ARGS_BEGIN}", CALL_END

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        return extractor_for(SYNTAX, tools)
