"""Pythonic tool calls (Llama 3.2 and Llama 4): [get_weather(city="Paris"), get_time()].

Arguments are Python keyword arguments; they are turned into a JSON object string, streamed one
argument at a time as each value completes. The constraint writes each value as JSON under the
property's schema (JSON strings, numbers, lists and objects are Python literals too; true,
false and null are read as such).

Custom tools (raw input): `[apply_patch(r\"\"\"INPUT\"\"\")]`, the input as the call's one positional
argument in a raw triple-quoted string, whose Python value is the input exactly (no escapes
read). That is how a model writes a block of text into Python. The input ends at the first
`\"\"\")` (free text is held from writing it; a regex or Lark input may not contain it).
"""

from __future__ import annotations

import ast
import json
from typing import Any

import regex

from toolwire.vocabulary import ToolChoiceMode

from .base import (
    CallDelta,
    Delta,
    StreamingExtractor,
    ToolFormat,
    new_call_id,
    partial_suffix,
    schema_content,
)
from .inputs import Tool, ToolChoice, message_text
from .plain_render import PlainStyle

MAX_OPTIONAL = 10  # optional properties expand the grammar 2^n; beyond this, refuse strict

_CALL = regex.compile(r"\s*(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)\(")
_KEY = regex.compile(r"\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*")
_LITERALS = {"true": "True", "false": "False", "null": "None"}
RAW_OPEN, RAW_CLOSE = 'r"""', '""")'
_RAW_OPEN = regex.compile(r'\s*r?"""')


def python_value(text: str) -> Any:
    """A keyword argument's value, written as a Python or a JSON literal."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    # Mixed spellings ([true, None]): rename JSON's bare words outside strings.
    tokens = regex.split(r'("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')', text)
    fixed = "".join(
        t if i % 2 else regex.sub(r"\b(true|false|null)\b", lambda m: _LITERALS[m.group(1)], t)
        for i, t in enumerate(tokens)
    )
    return ast.literal_eval(fixed)


def _value_end(text: str) -> int | None:
    """Index just past a complete value at the start of text (before `,` or `)` at depth 0)."""
    depth, quote, escape = 0, None, False
    for i, ch in enumerate(text):
        if quote:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                return i if ch == ")" else None
            depth -= 1
        elif ch == "," and depth == 0:
            return i
    return None


class PythonicExtractor(StreamingExtractor):
    """[f(a=1), g()] at the start of the output (or after text) becomes calls; anything that does
    not parse as calls of known tools is content."""

    def __init__(self, tool_names: set[str], custom_names: frozenset[str] = frozenset()):
        self.names = tool_names | custom_names
        self.custom_names = custom_names
        self.raw_input: bool | None = None  # in a custom call: False before r""", True after
        self.buf = ""
        self.in_list = False
        self.calls = 0
        self.current: str | None = None  # the call being read
        self.first_arg = True
        self.after_call = False  # between a call's ")" and the next "," or the closing "]"
        self.raw = ""
        self.started_content = False

    @property
    def call_count(self) -> int:
        return self.calls

    def feed(self, text: str) -> Delta:
        out = Delta()
        self.buf += text
        while self._step(out):
            pass
        return out

    def finish(self) -> Delta:
        out = Delta()
        if self.raw_input:  # a custom call cut by max tokens: its input so far
            if self.buf:
                self._args(out, self.buf)
        elif not self.in_list:
            out.content += self._clean(self.buf)
        elif self.calls == 0 and self.current is None:
            out.content += self._clean(self.raw + self.buf)
        self.buf = ""
        return out

    def _clean(self, text: str) -> str:
        text = text if self.started_content else text.lstrip()
        return text.rstrip()

    def _step(self, out: Delta) -> bool:
        if not self.in_list:
            at = self.buf.find("[")
            if at < 0:
                self._emit_content(out, self.buf)
                self.buf = ""
                return False
            self._emit_content(out, self.buf[:at])
            self.buf, self.raw, self.in_list = self.buf[at + 1 :], "[", True
            return True
        if self.after_call:
            return self._after_call(out)
        if self.raw_input is not None:
            return self._step_raw(out)
        if self.current is None:
            m = _CALL.match(self.buf, partial=True)
            if m is None or (not m.partial and m.group("name") not in self.names):
                return self._not_calls(out)
            if m.partial:
                return False
            self.current, self.first_arg = m.group("name"), True
            custom = self.current in self.custom_names
            out.calls.append(
                CallDelta(index=self.calls, id=new_call_id(), name=self.current, custom=custom)
            )
            if custom:
                self.raw_input = False
            self.raw += self.buf[: m.end()]
            self.buf = self.buf[m.end() :]
            return True
        stripped = self.buf.lstrip()
        if stripped.startswith(")"):
            self._args(out, "{}" if self.first_arg else "}")
            self.buf = stripped[1:]
            self.current = None
            self.calls += 1
            self.after_call = True
            return True
        if stripped.startswith(","):
            self.buf = stripped[1:]
            return True
        m = _KEY.match(self.buf, partial=True)
        if m is None:
            return self._not_calls(out)
        if m.partial:
            return False
        end = _value_end(self.buf[m.end() :])
        if end is None:
            return False
        value_text = self.buf[m.end() : m.end() + end].strip()
        try:
            value = json.dumps(python_value(value_text), ensure_ascii=False)
        except (ValueError, SyntaxError):
            return self._not_calls(out)
        prefix = "{" if self.first_arg else ", "
        self._args(out, f"{prefix}{json.dumps(m.group('key'))}: {value}")
        self.first_arg = False
        self.buf = self.buf[m.end() + end :]
        return True

    def _step_raw(self, out: Delta) -> bool:
        """A custom call's input: r\"\"\", then raw text streamed up to \"\"\")."""
        if not self.raw_input:
            m = _RAW_OPEN.match(self.buf, partial=True)
            if m is None:
                return self._not_calls(out)
            if m.partial:
                return False
            self.buf, self.raw_input = self.buf[m.end() :], True
            return True
        at = self.buf.find(RAW_CLOSE)
        if at < 0:
            keep = partial_suffix(self.buf, RAW_CLOSE)
            if len(self.buf) > keep:
                self._args(out, self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
            return False
        if at:
            self._args(out, self.buf[:at])
        self.buf = self.buf[at + len(RAW_CLOSE) :]
        self.raw_input = self.current = None
        self.calls += 1
        self.after_call = True
        return True

    def _after_call(self, out: Delta) -> bool:
        m = regex.match(r"\s*(?P<sep>,|\])", self.buf, partial=True)
        if m is None:
            self.in_list = self.after_call = False
            return True
        if m.partial:
            return False
        self.after_call = False
        self.buf = self.buf[m.end() :]
        if m.group("sep") == "]":
            self.in_list = False
        return True

    def _not_calls(self, out: Delta) -> bool:
        if self.calls or self.current:
            self.in_list = False  # calls already made stay; the rest is content
            return True
        self._emit_content(out, self.raw)
        self.raw, self.in_list = "", False
        # Continue scanning after this "[" so the same text is not taken again.
        at = self.buf.find("[")
        self._emit_content(out, self.buf if at < 0 else self.buf[:at])
        self.buf = "" if at < 0 else self.buf[at:]
        return at >= 0

    def _emit_content(self, out: Delta, text: str) -> None:
        if not self.started_content:
            text = text.lstrip()
        if text:
            out.content += text
            self.started_content = True


def _kwargs_format(schema: Any) -> dict:
    """The grammar of one call's keyword arguments, property by property under its schema."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or schema.get("type", "object") != "object":
        return {"type": "regex", "pattern": r"([A-Za-z_][A-Za-z0-9_]*=[^()]*)?"}
    required = [k for k in props if k in set(schema.get("required", []))]
    optional = [k for k in props if k not in set(required)]
    if len(optional) > MAX_OPTIONAL:
        return {"type": "regex", "pattern": r"([A-Za-z_][A-Za-z0-9_]*=[^()]*)?"}

    def arg(key: str, first: bool) -> dict:
        return {
            "type": "sequence",
            "elements": [
                {"type": "const_string", "value": ("" if first else ", ") + f"{key}="},
                schema_content(props[key]),
            ],
        }

    def rest(keys: list[str], first: bool) -> dict:
        if not keys:
            return {"type": "const_string", "value": ""}
        with_it = {"type": "sequence", "elements": [arg(keys[0], first), rest(keys[1:], False)]}
        return {"type": "or", "elements": [with_it, rest(keys[1:], first)]}

    elements = [arg(k, i == 0) for i, k in enumerate(required)]
    elements.append(rest(optional, not required))
    return {"type": "sequence", "elements": elements}


def _until_close(content: dict) -> dict:
    """A custom input's content, which the first \"\"\") ends: free text may not hold it."""
    if content.get("type") == "any_text":
        return {**content, "excludes": [*content.get("excludes", []), RAW_CLOSE]}
    return content


def pythonic_unenforceable(schema: Any) -> str | None:
    """Why a strict schema cannot be written as keyword arguments exactly, or None."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties", {}), dict):
        return "parameters must be an object schema with properties"
    if schema.get("additionalProperties", False) not in (False, None):
        return "additionalProperties cannot be enforced as keyword arguments"
    optional = set(schema.get("properties", {})) - set(schema.get("required", []))
    if len(optional) > MAX_OPTIONAL:
        return f"more than {MAX_OPTIONAL} optional properties"
    return None


def _call_text(call: dict) -> str:
    if call.get("type") == "custom":
        return f"{call['custom']['name']}({RAW_OPEN}{call['custom']['input']}{RAW_CLOSE}"
    try:
        args = json.loads(call["function"]["arguments"] or "{}")
    except json.JSONDecodeError:
        args = {}
    kwargs = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    return f"{call['function']['name']}({kwargs})"


def _definition(t: Tool) -> dict:
    """A function's definition; a custom tool's, with how its call is written."""
    if not t.custom:
        return t.openai_dict()["function"]
    return {
        **t.openai_dict()["custom"],
        "call": f"{t.name}({RAW_OPEN}<raw input, not JSON>{RAW_CLOSE}",
    }


STYLE = PlainStyle(
    tools_block=lambda ts: (
        "You are an expert in composing functions. You are given a question and a set of "
        "possible functions. If you decide to invoke any of the function(s), you MUST put it "
        "in the format of [func_name1(params_name1=params_value1, params_name2=params_value2"
        "...), func_name2(params)]\nYou SHOULD NOT include any other text in the response if "
        "you call a function.\nHere is a list of functions in JSON format that you can invoke."
        "\n\n" + json.dumps([_definition(t) for t in ts], indent=4)
    ),
    calls_text=lambda calls: "[" + ", ".join(_call_text(c) for c in calls) + "]",
    result_text=lambda m, call: message_text(m),
    result_role="ipython",
    results_joiner=None,
)


class PythonicFormat(ToolFormat):
    name = "pythonic"
    call_marker = "["

    def plain_style(self) -> PlainStyle:
        return STYLE

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        """The list opens with its first call: `[NAME(` is the trigger, so a bracket in prose
        starts nothing; later calls of the list follow ", "."""
        if choice.mode == ToolChoiceMode.NONE:
            return {"type": "any_text", "excludes": [f"[{t.name}(" for t in tools]}
        chosen = choice.callable(tools)

        def args_and_close(t: Tool) -> list[dict]:
            if t.custom:
                return [
                    {"type": "const_string", "value": RAW_OPEN},
                    _until_close(schemas[t.name]),
                    {"type": "const_string", "value": RAW_CLOSE},
                ]
            return [_kwargs_format(schemas[t.name]), {"type": "const_string", "value": ")"}]

        more = {
            "type": "star",
            "content": {
                "type": "sequence",
                "elements": [
                    {"type": "const_string", "value": ", "},
                    {
                        "type": "or",
                        "elements": [
                            {
                                "type": "sequence",
                                "elements": [
                                    {"type": "const_string", "value": f"{t.name}("},
                                    *args_and_close(t),
                                ],
                            }
                            for t in chosen
                        ],
                    },
                ],
            },
        }
        tags = [
            {
                "type": "tag",
                "begin": f"[{t.name}(",
                "end": "]",
                "content": {
                    "type": "sequence",
                    "elements": args_and_close(t) + ([more] if parallel else []),
                },
            }
            for t in chosen
        ]
        if choice.mode == ToolChoiceMode.AUTO:
            # allowed_tools: a call of a tool outside the subset may not open in free text
            # either (the extractor, knowing only the subset, would leave it as content).
            others = [f"[{t.name}(" for t in tools if t not in chosen]
            return {
                "type": "triggered_tags",
                "triggers": [f"[{t.name}(" for t in chosen],
                "tags": tags,
                "at_least_one": False,
                "stop_after_first": True,
                **({"excludes": others} if others else {}),
            }
        return {
            "type": "tags_with_separator",
            "tags": tags,
            "separator": "",
            "at_least_one": True,
            "stop_after_first": True,
        }

    def unenforceable(self, schema: Any) -> str | None:
        return pythonic_unenforceable(schema)

    def custom_call(self, name: str) -> tuple[str, str]:
        return f"{name}({RAW_OPEN}", RAW_CLOSE

    def extractor(self, tools: list[Tool]) -> PythonicExtractor:
        return PythonicExtractor(
            {t.name for t in tools if not t.custom}, frozenset(t.name for t in tools if t.custom)
        )
