"""Families whose calls carry XML-like parameters with raw values (Qwen3-Coder, GLM).

    qwen3_coder: <tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n</function>\\n</tool_call>
    glm45/glm47: <tool_call>NAME[\\n]<arg_key>K</arg_key>[\\n]<arg_value>V</arg_value>[\\n]</tool_call>

A value is raw text typed by the tool's JSON schema: a string as it is, anything else (integer,
number, boolean, null, object, array) as JSON. The constraint is xgrammar's own reading of a JSON
schema in these layouts (`json_schema` content with `style` qwen_xml or glm_xml): properties in
the schema's order, required ones present, each value held to its subschema, at most one
whitespace character around a value that is not a plain string. The extractor reads each value
back the same way (`typed_value`) and streams `arguments` as JSON: a plain string's characters as
they arrive, any other value once its closing tag is seen.

Why not `xgrammar.get_model_structural_tag("qwen_3_coder" | "glm_4_7")`: it knows no
allowed_tools subset beside the prompt's tools, no custom tools, its `required` lets free text
follow the calls (triggered_tags with at_least_one), and toolwire bans result markup from free
text and adds reasoning itself (reasoning.py); so the family builds its tags the way the other
families do and takes from xgrammar only the per-parameter grammar (`style`), the part that must
agree with xgrammar's JSON-schema semantics.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .base import (
    CallDelta,
    Delta,
    StreamingExtractor,
    TrimmedContent,
    new_call_id,
    partial_suffix,
)
from .inputs import Tool

_WS = " \n\r\t"  # the whitespace xgrammar's XML styles allow around a value


@dataclass(frozen=True)
class XmlSyntax:
    marker: str  # opens every call: <tool_call>
    name_open: str  # after the marker (and whitespace): text before the name ("<function=" or "")
    name_stop: str  # characters that end the name (">" or "<" and whitespace)
    name_close: str  # consumed after the name (">" or "")
    key_open: str  # <parameter= | <arg_key>
    key_close: str  # ">" | "</arg_key>" followed by whitespace and "<arg_value>"
    value_open: str  # "" | "<arg_value>" (after key_close and whitespace)
    value_close: str  # </parameter> | </arg_value>
    call_close: str  # </function> then whitespace and </tool_call> | </tool_call>
    call_end: str  # "</tool_call>"
    trim_newline: bool  # a plain string's one leading and one trailing newline are layout (qwen)
    custom_end: str  # what ends a custom call's raw input


# -- values typed by the schema -----------------------------------------------------------
_KINDS = {"string", "integer", "number", "boolean", "null", "object", "array"}


def _resolve(schema: Any, root: dict) -> Any:
    seen = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
        ref = schema["$ref"]
        target: Any = root
        for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema, seen = target, seen + 1
    return schema


def _kinds(schema: Any, root: dict) -> set[str] | None:
    """The JSON types a subschema admits (None: any)."""
    schema = _resolve(schema, root)
    if schema is True or not isinstance(schema, dict):
        return None
    if "const" in schema:
        return {_kind_of(schema["const"])}
    if "enum" in schema and isinstance(schema["enum"], list):
        return {_kind_of(v) for v in schema["enum"]}
    if isinstance(schema.get("anyOf"), list):
        out: set[str] = set()
        for sub in schema["anyOf"]:
            k = _kinds(sub, root)
            if k is None:
                return None
            out |= k
        return out
    t = schema.get("type")
    if isinstance(t, str):
        return {t} | ({"integer"} if t == "number" else set())
    if isinstance(t, list):
        return set(t) | ({"integer"} if "number" in t else set())
    if "properties" in schema:
        return {"object"}
    return None


def _kind_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _plain_string(schema: Any, root: dict) -> bool:
    """The subschema admits every string and nothing else: its value is raw text, unparsed."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or schema.get("type") != "string":
        return False
    return not ({"enum", "const", "pattern", "format", "minLength", "maxLength"} & schema.keys())


def typed_value(schema: Any, root: dict, raw: str, trim_newline: bool) -> Any:
    """A parameter's raw text as the JSON value the schema types it as: a plain string as it is
    (less the layout newlines of qwen), else the JSON reading of the text without its
    surrounding whitespace when that reading is a non-string value the schema admits, else the
    text as a string."""
    if schema is not None and _plain_string(schema, root):
        return _trim(raw) if trim_newline else raw
    text = raw.strip(_WS)
    kinds = _kinds(schema, root) if schema is not None else None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError:
        value = text
    if not isinstance(value, str):
        kind = _kind_of(value)
        if kinds is None or kind in kinds or (kind == "integer" and "number" in kinds):
            return value
    if kinds is None and trim_newline:  # any value (xml_any): a string is raw, layout trimmed
        return _trim(raw)
    return text if kinds is None or "string" in kinds else value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _trim(raw: str) -> str:
    if raw.startswith("\n"):
        raw = raw[1:]
    return raw[:-1] if raw.endswith("\n") else raw


def raw_string_issue(schema: Any, root: dict, path: str) -> str | None:
    """Why a strict parameter's value cannot be read back exactly, or None. The XML styles let
    one whitespace character stand on each side of a value that is not a plain string, and the
    extractor drops it: a string that must start or end with whitespace, or a length floor that
    dropping it could break, cannot be told apart."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return None
    for i, sub in enumerate(schema.get("anyOf") or []):
        why = raw_string_issue(sub, root, f"{path}/anyOf/{i}")
        if why:
            return why
    if _plain_string(schema, root):
        return None
    for v in ([schema["const"]] if "const" in schema else []) + list(schema.get("enum") or []):
        if isinstance(v, str) and (v != v.strip(_WS) or v == ""):
            return f"{path}: the string {v!r} has whitespace at its ends (or is empty)"
    types = schema.get("type")
    if types == "string" or (isinstance(types, list) and "string" in types):
        if schema.get("minLength"):
            return f"{path}: minLength on a raw string value"
        if "pattern" in schema:
            return f"{path}: pattern on a raw string value"
    return None


def names_issue(schema: Any) -> str | None:
    """A property name the layout cannot write: one holding a tag's brackets or a line break
    would end the key early (or not at all)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    for name in props or {}:
        if not name or re.search(r"[<>\x00-\x1f]", name):
            return f"property name {name!r} (the XML layout cannot write <, > or a line break)"
    return None


def content(schema: Any, style: str) -> dict:
    """A call's parameters as structural-tag content: xgrammar's XML layout of the schema."""
    return {"type": "json_schema", "json_schema": schema, "style": style, "max_whitespace_cnt": 1}


# -- the streaming extractor ----------------------------------------------------------------
_LONGEST = 256  # longer than any tool or parameter name
_TEXT, _HEADER, _BODY, _KEY, _VALUE, _CLOSE, _RAW = range(7)


class XmlCallExtractor(TrimmedContent, StreamingExtractor):
    """Text outside calls is content; a call of a known tool streams as a tool-call delta; a
    marker that opens no call of a known tool goes back out as content, never dropped."""

    def __init__(self, syntax: XmlSyntax, tools: list[Tool]):
        self.syntax = syntax
        self.functions = {t.name: (t.parameters or {}) for t in tools if not t.custom}
        self.customs = {t.name for t in tools if t.custom}
        self.state = _TEXT
        self.buf = ""
        self.raw = ""  # text since the marker, given back as content if no call forms
        self.calls = 0
        self.schema: dict = {}
        self.key = ""
        self.keys = 0  # parameters written in the current call
        self.value = ""  # a buffered (not plain string) value
        self.streaming = False  # the current value is a plain string, streamed
        self.lead = True  # a streamed string has not yet passed its first character

    @property
    def call_count(self) -> int:
        return self.calls

    def feed(self, text: str) -> Delta:
        out = Delta()
        self.buf += text
        while self.buf and self._step(out):
            pass
        return out

    def finish(self) -> Delta:
        out = Delta()
        if self.state == _TEXT:
            self._content(out, self.buf, final=True)
        elif self.state == _HEADER:
            self._content(out, self.raw + self.buf, final=True)
        elif self.state == _RAW:
            self._args(out, self.buf)  # cut by max tokens: the input so far
        elif self.state == _VALUE and not self.streaming:
            pass  # cut mid-value: what streamed stays, as OpenAI does
        elif self.state == _VALUE and self.streaming:
            self._args(out, _escaped(self.buf))
        self.buf = ""
        return out

    def _step(self, out: Delta) -> bool:
        return (
            self._text,
            self._header,
            self._body,
            self._key_step,
            self._value_step,
            self._close,
            self._raw_step,
        )[self.state](out)

    # -- states --------------------------------------------------------------------------
    def _text(self, out: Delta) -> bool:
        m = self.syntax.marker
        at = self.buf.find(m)
        if at >= 0:
            self._content(out, self.buf[:at])
            self.raw, self.buf = m, self.buf[at + len(m) :]
            self.state = _HEADER
            return True
        keep = partial_suffix(self.buf, m)
        self._content(out, self.buf[: len(self.buf) - keep])
        self.buf = self.buf[len(self.buf) - keep :]
        return False

    def _header(self, out: Delta) -> bool:
        s = self.syntax
        body = self.buf.lstrip(_WS)
        if not body:
            return False
        if not body.startswith(s.name_open):
            if s.name_open.startswith(body):
                return False
            return self._not_a_call(out)
        rest = body[len(s.name_open) :]
        end = next((i for i, c in enumerate(rest) if c in s.name_stop), -1)
        if end > _LONGEST or (end < 0 and len(rest) > _LONGEST):
            return self._not_a_call(out)  # no tool's name is that long
        if end < 0:
            return False  # the name goes on
        name = rest[:end]
        after = rest[end:]
        if not after.startswith(s.name_close):
            if s.name_close.startswith(after):
                return False  # the name's close goes on (DSML's `">`)
            return self._not_a_call(out)
        used = len(self.buf) - len(after) + len(s.name_close)
        if name in self.customs:
            if not after[len(s.name_close) :]:
                return False  # its newline may follow
            if not after[len(s.name_close) :].startswith("\n"):
                return self._not_a_call(out)
            out.calls.append(CallDelta(index=self.calls, id=new_call_id(), name=name, custom=True))
            self.buf = self.buf[used + 1 :]
            self.state = _RAW
            return True
        if name not in self.functions:
            return self._not_a_call(out)
        out.calls.append(CallDelta(index=self.calls, id=new_call_id(), name=name))
        self.schema, self.keys = self.functions[name], 0
        self.buf = self.buf[used:]
        self.state = _BODY
        return True

    def _body(self, out: Delta) -> bool:
        """Between parameters: the next key, or the call's close."""
        s = self.syntax
        body = self.buf.lstrip(_WS)
        if not body:
            self.buf = ""
            return False
        for literal, state in ((s.key_open, _KEY), (s.call_close, _CLOSE)):
            if body.startswith(literal):
                self.buf = body[len(literal) :]
                if state == _CLOSE:
                    self._args(out, "}" if self.keys else "{}")
                    self.calls += 1
                self.state = state
                return True
            if literal.startswith(body):
                self.buf = body
                return False
        # Neither: the call ends here (what streamed stays), the rest is content.
        self._args(out, "}" if self.keys else "{}")
        self.calls += 1
        self.buf, self.state = body, _TEXT
        return True

    def _key_step(self, out: Delta) -> bool:
        s = self.syntax
        at = self.buf.find(s.key_close)
        # No key is that long: not a parameter (decided alike however the text was cut).
        if at > _LONGEST or (at < 0 and len(self.buf) >= _LONGEST + len(s.key_close)):
            return self._broken(out)
        if at < 0:
            return False
        key, rest = self.buf[:at], self.buf[at + len(s.key_close) :]
        if s.value_open:
            body = rest.lstrip(_WS)
            if not body or (len(body) < len(s.value_open) and s.value_open.startswith(body)):
                return False
            if not body.startswith(s.value_open):
                return self._broken(out)
            rest = body[len(s.value_open) :]
        self.key, self.buf = key, rest
        sub = (
            (self.schema.get("properties") or {}).get(key)
            if isinstance(self.schema, dict)
            else None
        )
        self._open_value(out, key, sub is not None and _plain_string(sub, self.schema))
        return True

    def _open_value(self, out: Delta, key: str, streaming: bool) -> None:
        """The key written into the arguments; a plain string's value streams from here."""
        self.streaming, self.lead, self.value = streaming, True, ""
        self._args(
            out, ("{" if not self.keys else ", ") + json.dumps(key, ensure_ascii=False) + ": "
        )
        self.keys += 1
        if self.streaming:
            self._args(out, '"')
        self.state = _VALUE

    def _value_step(self, out: Delta) -> bool:
        close = self.syntax.value_close
        at = self.buf.find(close)
        if at < 0:
            keep = partial_suffix(self.buf, close)
            if self.streaming:
                self._stream(out, self.buf[: len(self.buf) - keep], final=False)
                self.buf = self.buf[len(self.buf) - keep :]
            return False
        text, self.buf = self.buf[:at], self.buf[at + len(close) :]
        if self.streaming:
            self._stream(out, text, final=True)
            self._args(out, '"')
        else:
            sub = (self.schema.get("properties") or {}).get(self.key)
            raw = self.value + text
            value = typed_value(sub, self.schema, raw, self.syntax.trim_newline)
            self._args(out, json.dumps(value, ensure_ascii=False))
        self.state = _BODY
        return True

    def _stream(self, out: Delta, text: str, final: bool) -> None:
        """A plain string's characters; qwen's layout newlines (the first character, the last
        before the close) are held until it is sure what they are."""
        text = self.value + text
        self.value = ""
        if self.syntax.trim_newline:
            if self.lead and text:
                if text.startswith("\n"):
                    text = text[1:]
                self.lead = False
            if text.endswith("\n"):
                text, self.value = text[:-1], "\n"
            if final:
                self.value = ""
        if text:
            self._args(out, _escaped(text))

    def _close(self, out: Delta) -> bool:
        """After the parameters' close: the call's own end (qwen: </tool_call>)."""
        end = self.syntax.call_end
        if self.syntax.call_close == end:
            self.state = _TEXT
            return True
        body = self.buf.lstrip(_WS)
        if body.startswith(end):
            self.buf, self.state = body[len(end) :], _TEXT
            return True
        if end.startswith(body):
            return False
        self.state = _TEXT  # no </tool_call>: the rest is content
        return True

    def _raw_step(self, out: Delta) -> bool:
        end = self.syntax.custom_end
        at = self.buf.find(end)
        if at < 0:
            keep = partial_suffix(self.buf, end)
            if len(self.buf) > keep:
                self._args(out, self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
            return False
        if at:
            self._args(out, self.buf[:at])
        self.buf = self.buf[at + len(end) :]
        self.calls += 1
        self.state = _TEXT
        return True

    # -- helpers -------------------------------------------------------------------------
    def _not_a_call(self, out: Delta) -> bool:
        """What followed the marker names no known tool: it is content, marker and all."""
        self._content(out, self.raw)
        self.raw = ""
        self.state = _TEXT
        return True

    def _broken(self, out: Delta) -> bool:
        """A call whose body stops making sense: it ends (what streamed stays), rest content."""
        self._args(out, "}" if self.keys else "{}")
        self.calls += 1
        self.state = _TEXT
        return True

    def _args(self, out: Delta, text: str) -> None:
        if text:
            super()._args(out, text)


def _escaped(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def strict_issue(schema: Any, root_kinds: tuple[str, ...] = ("object",)) -> str | None:
    """Why a strict tool's parameters cannot be written and read back exactly in the XML layout
    (None: they can): parameters must be an object of named properties, each name writable, and
    each raw value readable alike (raw_string_issue)."""
    if not isinstance(schema, dict) or schema.get("type") not in root_kinds:
        return 'parameters that are not a "type": "object" schema'
    why = names_issue(schema)
    if why:
        return why
    for name, sub in (schema.get("properties") or {}).items():
        why = raw_string_issue(sub, schema, f"/properties/{name}")
        if why:
            return why
    return None


def write_value(value: Any) -> str:
    """A past call's argument as the model writes it: a string raw, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
