"""The GLM tool formats (vLLM's and SGLang's `glm45` for GLM-4.5/4.6, `glm47` for GLM-4.7/5):

    glm45: <tool_call>NAME\\n<arg_key>K</arg_key>\\n<arg_value>V</arg_value>\\n...</tool_call>
    glm47: <tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value>...</tool_call>

Values are raw text typed by the tool's schema (xml_calls.py): strings raw, JSON otherwise.
Tools are declared as JSON lines in <tools></tools> in the system turn; results come back as
<tool_response>...</tool_response> after <|observation|>. GLM thinks first (<think>, handled by
reasoning.py from the template: GLM-4.7's generation prompt opens it).

A custom tool's call puts its raw input after the name's line, where the arguments go:
<tool_call>NAME\\nINPUT</tool_call> (the input may not contain </tool_call>).
"""

from __future__ import annotations

import json
from typing import Any

from .base import ToolFormat, call_tags, calls_constraint
from .inputs import Tool, ToolChoice, message_text
from .plain_render import PlainStyle, arguments_object
from .xml_calls import XmlCallExtractor, XmlSyntax, content, strict_issue, write_value

MARKER = "<tool_call>"
END = "</tool_call>"
KEY_OPEN, KEY_CLOSE = "<arg_key>", "</arg_key>"
VALUE_OPEN, VALUE_CLOSE = "<arg_value>", "</arg_value>"
# Detection: the instruction line of GLM-4.7's template (4.5/4.6 put a newline after the name).
GLM47_HINT = "{function-name}<arg_key>"

SYNTAX = XmlSyntax(
    marker=MARKER,
    name_open="",
    name_stop="< \n\r\t",
    name_close="",
    key_open=KEY_OPEN,
    key_close=KEY_CLOSE,
    value_open=VALUE_OPEN,
    value_close=VALUE_CLOSE,
    call_close=END,
    call_end=END,
    trim_newline=False,
    custom_end=END,
)


class GlmFormat(ToolFormat):
    call_marker = MARKER
    result_markers = ("<tool_response", "</tool_response>", "<|observation|>")
    tag_prefixes = ("<tool", "</tool", "<arg_", "</arg_")
    turn_end_tokens = ("<|user|>", "<|observation|>")

    def __init__(self, newline: bool):
        """newline: GLM-4.5/4.6's layout (a newline after the name and after each tag)."""
        self.newline = newline
        self.name = "glm45" if newline else "glm47"
        self.nl = "\n" if newline else ""

    def call_begin(self, name: str) -> str:
        return f"{MARKER}{name}{self.nl}"

    def custom_begin(self, name: str) -> str:
        return f"{MARKER}{name}\n"

    def tools_block(self, tools: list[Tool]) -> str:
        nl = self.nl
        return (
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
            + "".join(json.dumps(t.openai_dict(), ensure_ascii=False) + "\n" for t in tools)
            + "</tools>\n\nFor each function call, output the function name and arguments within "
            f"the following XML format:\n<tool_call>{{function-name}}{nl}<arg_key>{{arg-key-1}}"
            f"</arg_key>{nl}<arg_value>{{arg-value-1}}</arg_value>{nl}<arg_key>{{arg-key-2}}"
            f"</arg_key>{nl}<arg_value>{{arg-value-2}}</arg_value>{nl}...{nl}</tool_call>"
            + (
                "\n\nA custom tool takes raw input (no arguments): "
                "<tool_call>{tool-name}\n{input}</tool_call>"
                if any(t.custom for t in tools)
                else ""
            )
        )

    def write_calls(self, calls: list[dict]) -> str:
        """Past calls (OpenAI dicts) as the model writes them."""
        nl, out = self.nl, []
        for c in calls:
            if c.get("type") == "custom":
                out.append(self.custom_begin(c["custom"]["name"]) + c["custom"]["input"] + END)
                continue
            args = arguments_object(c["function"]["arguments"])
            pairs = (
                "".join(
                    f"{KEY_OPEN}{k}{KEY_CLOSE}{nl}{VALUE_OPEN}{write_value(v)}{VALUE_CLOSE}{nl}"
                    for k, v in args.items()
                )
                if isinstance(args, dict)
                else ""
            )
            out.append(self.call_begin(c["function"]["name"]) + pairs + END)
        return nl.join(out)

    def plain_style(self) -> PlainStyle:
        return PlainStyle(
            tools_block=self.tools_block,
            calls_text=self.write_calls,
            result_text=lambda m, call: f"<tool_response>\n{message_text(m)}\n</tool_response>",
        )

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tags = call_tags(
            self, tools, schemas, choice, self.call_begin, END, lambda s: content(s, "glm_xml")
        )
        return calls_constraint(tags, [MARKER], self.nl, choice, parallel)

    def unenforceable(self, schema: Any) -> str | None:
        return strict_issue(schema)

    def custom_call(self, name: str) -> tuple[str, str]:
        return self.custom_begin(name), END

    def extractor(self, tools: list[Tool]) -> XmlCallExtractor:
        return XmlCallExtractor(SYNTAX, tools)
