"""The Qwen3-Coder tool format (Qwen3-Coder, Qwen3.5, Qwen3.6; vLLM's and SGLang's
`qwen3_coder` parser):

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    VALUE
    </parameter>
    ...
    </function>
    </tool_call>

Values are raw text typed by the tool's schema (xml_calls.py). Tools are declared in the system
turn as <tools><function><name>...</name><parameters><parameter>... blocks; results come back as
<tool_response>...</tool_response> in a user turn. Qwen3.5/3.6 think first (<think>, handled by
reasoning.py from the template); Qwen3-Coder does not.

A custom tool's call puts its raw input where a function's parameters go, the function body:
<tool_call>\\n<function=NAME>\\nINPUT\\n</function>\\n</tool_call> (the input may not contain
that end).
"""

from __future__ import annotations

from typing import Any

from .base import ToolFormat, call_tags, calls_constraint
from .inputs import Tool, ToolChoice, message_text
from .plain_render import PlainStyle, arguments_object
from .xml_calls import XmlCallExtractor, XmlSyntax, content, strict_issue, write_value

MARKER = "<tool_call>"
CALL_END = "</function>\n</tool_call>"
CUSTOM_END = "\n</function>\n</tool_call>"

SYNTAX = XmlSyntax(
    marker=MARKER,
    name_open="<function=",
    name_stop=">\n<",
    name_close=">",
    key_open="<parameter=",
    key_close=">",
    value_open="",
    value_close="</parameter>",
    call_close="</function>",
    call_end="</tool_call>",
    trim_newline=True,
    custom_end=CUSTOM_END,
)

TOOLS_POSTAMBLE = (
    "\n</tools>\n\nIf you choose to call a function ONLY reply in the following format with NO "
    "suffix:\n\n<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\n"
    "value_1\n</parameter>\n<parameter=example_parameter_2>\nThis is the value for the second "
    "parameter\nthat can span\nmultiple lines\n</parameter>\n</function>\n</tool_call>\n\n"
    "<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified format: an inner "
    "<function=...></function> block must be nested within <tool_call></tool_call> XML tags\n"
    "- Required parameters MUST be specified\n- You may provide optional reasoning for your "
    "function call in natural language BEFORE the function call, but NOT after\n- If there is "
    "no function call available, answer the question like normal with your current knowledge "
    "and do not tell the user about function calls\n</IMPORTANT>"
)
CUSTOM_POSTAMBLE = (
    "\n\nA custom tool takes raw input (not parameters): write it as the function body, "
    "<tool_call>\n<function=<tool-name>>\n<input>\n</function>\n</tool_call>"
)


def call_begin(name: str) -> str:
    return f"{MARKER}\n<function={name}>"


def custom_begin(name: str) -> str:
    return f"{MARKER}\n<function={name}>\n"


def _declaration(t: Tool) -> str:
    """A tool as the Qwen3-Coder template declares it."""
    if t.custom:
        d = t.openai_dict()["custom"]
        return (
            f"\n<function>\n<name>{t.name}</name>\n<description>{(t.description or '').strip()}"
            f"</description>\n<format>{d['format']}</format>\n</function>"
        )
    out = f"\n<function>\n<name>{t.name}</name>"
    if t.description:
        out += f"\n<description>{t.description.strip()}</description>"
    out += "\n<parameters>"
    params = t.parameters or {}
    for key, field in (params.get("properties") or {}).items():
        out += f"\n<parameter>\n<name>{key}</name>"
        if isinstance(field, dict):
            if "type" in field:
                out += f"\n<type>{field['type']}</type>"
            if "description" in field:
                out += f"\n<description>{str(field['description']).strip()}</description>"
            for k, v in field.items():
                if k not in ("type", "description"):
                    out += f"\n<{k}>{write_value(v)}</{k}>"
        out += "\n</parameter>"
    if params.get("required"):
        out += f"\n<required>{write_value(params['required'])}</required>"
    return out + "\n</parameters>\n</function>"


def tools_block(tools: list[Tool]) -> str:
    return (
        "# Tools\n\nYou have access to the following functions:\n\n<tools>"
        + "".join(_declaration(t) for t in tools)
        + TOOLS_POSTAMBLE
        + (CUSTOM_POSTAMBLE if any(t.custom for t in tools) else "")
    )


def write_calls(calls: list[dict]) -> str:
    """Past calls (OpenAI dicts) as the model writes them."""
    out = []
    for c in calls:
        if c.get("type") == "custom":
            out.append(custom_begin(c["custom"]["name"]) + c["custom"]["input"] + CUSTOM_END)
            continue
        args = arguments_object(c["function"]["arguments"])
        params = (
            "".join(f"<parameter={k}>\n{write_value(v)}\n</parameter>\n" for k, v in args.items())
            if isinstance(args, dict)
            else ""
        )
        out.append(f"{call_begin(c['function']['name'])}\n{params}{CALL_END}")
    return "\n".join(out)


STYLE = PlainStyle(
    tools_block=tools_block,
    calls_text=write_calls,
    result_text=lambda m, call: f"<tool_response>\n{message_text(m)}\n</tool_response>",
)


class Qwen3CoderFormat(ToolFormat):
    name = "qwen3_coder"
    call_marker = MARKER
    result_markers = ("<tool_response", "</tool_response>")
    tag_prefixes = ("<tool", "</tool", "<function", "<parameter")

    def plain_style(self) -> PlainStyle:
        return STYLE

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tags = call_tags(
            self, tools, schemas, choice, call_begin, CALL_END, lambda s: content(s, "qwen_xml")
        )
        return calls_constraint(tags, [MARKER], "\n", choice, parallel)

    def unenforceable(self, schema: Any) -> str | None:
        return strict_issue(schema)

    def custom_call(self, name: str) -> tuple[str, str]:
        return custom_begin(name), CUSTOM_END

    def extractor(self, tools: list[Tool]) -> XmlCallExtractor:
        return XmlCallExtractor(SYNTAX, tools)
