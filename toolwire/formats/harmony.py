"""gpt-oss's Harmony format (vLLM's and SGLang's `openai` / `harmony` parsers).

Every output message is framed: `<|channel|>CHANNEL[ to=RECIPIENT][ <|constrain|>TYPE]<|message|>
BODY` and an end: `<|end|>`, `<|call|>` after a tool call, `<|return|>` at the end of the
turn; later messages of a turn open with `<|start|>assistant` (the prompt opens the first). The
`analysis` channel is reasoning (reasoning_content), `final` the answer (content); a call is
`<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>`. Tools are
declared as TypeScript in a `namespace functions {...}` of the developer message; results come
back as `<|start|>functions.NAME to=assistant<|channel|>commentary<|message|>...<|end|>`.

Custom tools (raw input): `<|channel|>commentary to=functions.NAME<|message|>INPUT<|call|>`, a
commentary message without a content type (Harmony's `<|constrain|>json` says the body is
JSON; without it the body is the raw text, as the built-in python tool's code is). The input
may not contain `<|call|>`.

Constraint. xgrammar 0.2.8's `get_model_structural_tag("harmony")` was read and not used: it
allows any number of analysis and final messages in any order (tags_with_separator over all of
them), so `required` does not force a call (a lone analysis message passes) and a call may
follow a final answer; it also takes three header spellings of a call, and has no custom tools
or allowed_tools subset of its own. Here the turn is: at most one analysis message, then the
answer (final) or the calls, by tool_choice: auto either, none the answer, required / named /
allowed_tools required the calls (at least one, of the callable tools; one with
parallel_tool_calls false). One spelling of the header is enforced (the Harmony docs' and the
openai-harmony renderer's); the extractor also reads the `to=` in the role part that gpt-oss's
own chat template writes for past calls. No tokens follow the last call's `<|call|>` but the
stop token (the template service stops on the tokenizer's eos, `<|return|>` in gpt-oss).
"""

from __future__ import annotations

import json
from typing import Any

import regex

from toolwire.vocabulary import ToolChoiceMode

from .base import (
    CallDelta,
    Delta,
    StreamingExtractor,
    ToolFormat,
    arguments_text,
    new_call_id,
    partial_suffix,
    schema_content,
)
from .inputs import Tool, ToolChoice, message_text
from .json_scan import JsonValueScanner
from .plain_render import PlainStyle, render_native

START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
CONSTRAIN, RETURN, CALL = "<|constrain|>", "<|return|>", "<|call|>"
SPECIAL_TOKENS = [START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL]
NEXT = START + "assistant"  # opens every message of the turn after the first
ANALYSIS = CHANNEL + "analysis" + MESSAGE
FINAL = CHANNEL + "final" + MESSAGE
# Free text of a message may not hold the framing (a message ends at its end token).
FRAMING = [START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL]
MAX_HEADER = 256  # a header longer than this is not one: its text is content


def call_begin(name: str) -> str:
    return f"{CHANNEL}commentary to=functions.{name} {CONSTRAIN}json{MESSAGE}"


def custom_begin(name: str) -> str:
    return f"{CHANNEL}commentary to=functions.{name}{MESSAGE}"


# -- rendering --------------------------------------------------------------------------------
SYSTEM = (
    "You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n\n"
    "Reasoning: {effort}\n\n# Valid channels: analysis, commentary, final. Channel must be "
    "included for every message."
)
TOOLS_CHANNEL = "\nCalls to these tools must go to the commentary channel: 'functions'."


def ts_type(schema: Any) -> str:
    """A JSON schema as the TypeScript-like type Harmony declares parameters with."""
    if not isinstance(schema, dict):
        return "any"
    if "enum" in schema:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"]) or "never"
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return " | ".join(ts_type(s) for s in schema[key]) or "any"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(ts_type({**schema, "type": k}) for k in kind) or "any"
    if kind == "array":
        item = ts_type(schema.get("items"))
        return f"Array<{item}>" if " | " in item else f"{item}[]"
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        if not isinstance(props, dict) or not props:
            return "object"
        required = set(schema.get("required", []))
        lines = []
        for key, sub in props.items():
            if isinstance(sub, dict) and sub.get("description"):
                lines.append(f"// {sub['description']}")
            mark = "" if key in required else "?"
            lines.append(f"{key}{mark}: {ts_type(sub)},")
        return "{\n" + "\n".join(lines) + "\n}"
    if kind is None:
        return "any"
    return {
        "string": "string",
        "integer": "number",
        "number": "number",
        "boolean": "boolean",
        "null": "null",
    }.get(kind, "any")


def tool_declaration(t: Tool) -> str:
    lines = [f"// {line}" for line in (t.description or "").splitlines()]
    if t.custom:
        syntax, definition = t.grammar
        if syntax == "text":
            lines.append("// Its input is raw text (not JSON).")
        else:
            lines.append(f"// Its input is raw text (not JSON) in this {syntax} grammar:")
            lines += [f"// {line}" for line in definition.splitlines()]
        lines.append(f"type {t.name} = (FREEFORM) => any;")
        return "\n".join(lines)
    params = t.parameters
    if not params or not (isinstance(params, dict) and params.get("properties")):
        lines.append(f"type {t.name} = () => any;")
    else:
        lines.append(f"type {t.name} = (_: {ts_type(params)}) => any;")
    return "\n".join(lines)


def tools_block(tools: list[Tool]) -> str:
    return (
        "# Tools\n\n## functions\n\nnamespace functions {\n\n"
        + "\n\n".join(tool_declaration(t) for t in tools)
        + "\n\n} // namespace functions"
    )


def calls_text(calls: list[dict]) -> str:
    """Past calls as the model writes them, each its own message (the first without `<|start|>
    assistant`, which the turn's opening carries)."""
    out = []
    for c in calls:
        if c.get("type") == "custom":
            out.append(custom_begin(c["custom"]["name"]) + c["custom"]["input"] + CALL)
        else:
            fn = c["function"]
            out.append(call_begin(fn["name"]) + arguments_text(fn["arguments"]) + CALL)
    return NEXT.join(out)


def _msg(role: str, body: str, channel: str = "") -> str:
    return f"{START}{role}{CHANNEL + channel if channel else ''}{MESSAGE}{body}{END}"


def harmony_prompt(messages: list[dict], tools: list[Tool], effort: str = "medium") -> str:
    """The conversation in Harmony, generation prompt (`<|start|>assistant`) added."""
    rest = list(messages)
    instructions = []
    while rest and rest[0]["role"] in ("system", "developer"):
        instructions.append(message_text(rest.pop(0)))
    out = [_msg("system", SYSTEM.format(effort=effort) + (TOOLS_CHANNEL if tools else ""))]
    developer = []
    if instructions:
        developer.append("# Instructions\n\n" + "\n\n".join(instructions))
    if tools:
        developer.append(tools_block(tools))
    if developer:
        out.append(_msg("developer", "\n\n".join(developer)))
    names: dict[str, str] = {}
    for m in rest:
        role, text = m["role"], message_text(m)
        if role == "assistant":
            calls = m.get("tool_calls") or []
            if text or (m.get("refusal") and not calls):
                out.append(
                    _msg("assistant", text or m["refusal"], "commentary" if calls else "final")
                )
            for c in calls:
                names[c.get("id") or ""] = (
                    c["custom"] if c.get("type") == "custom" else c["function"]
                )["name"]
                out.append(START + "assistant" + calls_text([c]))
        elif role == "tool":
            name = names.get(m.get("tool_call_id") or "", "tool")
            out.append(_msg(f"functions.{name} to=assistant", text, "commentary"))
        else:  # user, and a system or developer message later in the conversation
            out.append(_msg("developer" if role in ("system", "developer") else role, text))
    return "".join(out) + NEXT


# -- the extractor ----------------------------------------------------------------------------
_CHANNEL = regex.compile(r"<\|channel\|>\s*(\w+)")
_RECIPIENT = regex.compile(r"\bto=([^\s<]+)")
_HEADER_OPENERS = (START, CHANNEL, "to=")
_ENDS = (END, CALL, RETURN)  # end a message, consumed
_BREAKS = (START, CHANNEL)  # a new message begins: ends the one before, left for the next


def _may_open(text: str) -> bool:
    """Whether text (between messages) is or may become a message's header or a stray end."""
    return any(o.startswith(text) or text.startswith(o) for o in _HEADER_OPENERS) or any(
        e.startswith(text) for e in _ENDS
    )


class HarmonyExtractor(StreamingExtractor):
    """Harmony messages, piece by piece: analysis into reasoning, final and commentary text into
    content, commentary to=functions.NAME into a call (JSON arguments streamed as they arrive,
    in json_scan's canonical layout; a custom tool's raw input as it is). Text that is not in a
    Harmony frame is content; a call of a tool not offered is content, frame and all."""

    def __init__(self, tool_names: set[str], custom_names: frozenset[str] = frozenset()):
        self.tools, self.customs = tool_names, custom_names
        self.state = "head"  # head | body
        self.kind = ""  # body kinds: reasoning | content | plain | call | custom | trail | other
        self.buf = ""
        self.header = ""  # the raw header of the message being read
        self.scanner: JsonValueScanner | None = None
        self.pending: str | None = None  # a JSON call's name, announced when its value opens
        self.calls = 0
        self.trail = ""  # text after a call's JSON, before its end
        self.held = ""  # a JSON call's whitespace before its value opens

    @property
    def call_count(self) -> int:
        return self.calls

    def feed(self, text: str) -> Delta:
        out = Delta()
        self.buf += text
        while self.buf and (self._head(out) if self.state == "head" else self._body(out)):
            pass
        return out

    def finish(self) -> Delta:
        out = Delta()
        if self.state == "head":
            rest = self.buf.lstrip()
            if rest and not _may_open(rest):
                out.content += rest
        else:
            if self.kind == "call":
                self._json(out)
            if self.buf:
                self._emit(out, self.buf)
            self._end_message(out, "")
        self.buf = ""
        return out

    # -- states ------------------------------------------------------------------------------
    def _head(self, out: Delta) -> bool:
        stripped = self.buf.lstrip()
        if not stripped:
            return False
        for end in _ENDS:  # a stray end between messages (the stop token after a call): framing
            if stripped.startswith(end):
                self.buf = stripped[len(end) :]
                return True
        if not _may_open(stripped):
            self.state, self.kind, self.buf = "body", "plain", stripped
            return True
        at = stripped.find(MESSAGE)
        if at < 0:
            if len(stripped) > MAX_HEADER:
                self.state, self.kind, self.buf = "body", "plain", stripped
                return True
            return False
        if at > MAX_HEADER:
            self.state, self.kind, self.buf = "body", "plain", stripped
            return True
        self.header = stripped[: at + len(MESSAGE)]
        self.buf = stripped[at + len(MESSAGE) :]
        self.state, self.kind = "body", self._kind(self.header)
        if self.kind == "other":
            out.content += self.header
        elif self.kind == "custom":
            out.calls.append(
                CallDelta(index=self.calls, id=new_call_id(), name=self.pending, custom=True)
            )
            self.pending = None
        elif self.kind == "call":
            self.scanner = JsonValueScanner()
        return True

    def _kind(self, header: str) -> str:
        channel = _CHANNEL.search(header)
        recipient = _RECIPIENT.search(header)
        if recipient is not None:
            to = recipient.group(1)
            name = to[len("functions.") :] if to.startswith("functions.") else None
            if name in self.customs:
                self.pending = name
                return "custom"
            if name in self.tools:
                self.pending = name
                return "call"
            return "other"
        if channel is not None and channel.group(1) == "analysis":
            return "reasoning"
        return "content"

    def _json(self, out: Delta) -> bool:
        """A call's JSON arguments: the scanner says where they end (an end token inside a
        JSON string is text)."""
        scanner = self.scanner
        assert scanner is not None, "_head sets the scanner as a call's body begins"
        used, canonical = scanner.feed(self.buf)
        if not scanner.started:
            self.held += self.buf[:used]
        if scanner.failed:  # not JSON: the message was no call; its frame is content
            out.content += self.header + self.held
            self.kind, self.held, self.pending = "other", "", None
            self.buf = self.buf[used:]
            return True
        if self.pending and scanner.started:
            out.calls.append(CallDelta(index=self.calls, id=new_call_id(), name=self.pending))
            self.pending = None
        if canonical:
            self._args(out, canonical)
        self.buf = self.buf[used:]
        if scanner.done:
            self.kind = "trail"
            return True
        return False

    def _body(self, out: Delta) -> bool:
        if self.kind == "call":
            return self._json(out)
        ends = [(i, m) for m in _ENDS if (i := self.buf.find(m)) >= 0]
        ends += [(i, "") for m in _BREAKS if (i := self.buf.find(m)) >= 0]
        if self.kind == "plain":  # unframed text: only a new frame ends it
            ends = [(i, m) for i, m in ends if m == ""]
        if not ends:
            keep = max(partial_suffix(self.buf, m) for m in _ENDS + _BREAKS)
            if len(self.buf) > keep:
                self._emit(out, self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
            return False
        at, end = min(ends)
        if at:
            self._emit(out, self.buf[:at])
        self.buf = self.buf[at + len(end) :]
        self._end_message(out, end)
        self.state = "head"
        return True

    def _emit(self, out: Delta, text: str) -> None:
        if self.kind == "reasoning":
            out.reasoning += text
        elif self.kind in ("content", "plain", "other"):
            out.content += text
        elif self.kind == "custom":
            self._args(out, text)
        elif self.kind == "trail":
            self.trail += text

    def _end_message(self, out: Delta, end: str) -> None:
        if self.kind == "other":
            out.content += end
        elif self.kind == "call" and self.pending:  # no JSON came: give the frame back
            out.content += self.header + self.held + end
        elif self.kind in ("custom", "trail"):  # (a JSON call cut short is not counted)
            if self.kind == "trail" and self.trail.strip():
                out.content += self.trail.strip()
            self.calls += 1
        self.kind, self.trail, self.held, self.scanner, self.pending = "", "", "", None, None


# -- the format -------------------------------------------------------------------------------
class HarmonyFormat(ToolFormat):
    name = "harmony"
    call_marker = " to=functions."
    result_markers = (" to=assistant",)
    frames_all_output = True  # its extractor runs with no tools too (channels, not only calls)
    template_misreads_custom = True  # no template knows custom tools: Harmony written here
    own_switch = "reasoning_effort"  # "Reasoning: low|medium|high" in the system message

    def render(
        self,
        tokenizer: Any,
        messages: list[dict],
        tools: list[Tool],
        choice_mode: ToolChoiceMode = ToolChoiceMode.AUTO,
        template_kwargs: dict | None = None,
    ) -> str:
        """gpt-oss's own template where it renders tools (it declares them itself); Harmony
        written here otherwise, and always with custom tools (no template knows them)."""
        kw = template_kwargs or {}
        if self.uses_template(tokenizer, messages, tools):
            return render_native(tokenizer, messages, tools, **kw)
        return harmony_prompt(messages, tools, kw.get("reasoning_effort", "medium"))

    def plain_style(self) -> PlainStyle:
        return PlainStyle(
            tools_block=tools_block,
            calls_text=calls_text,
            result_text=lambda m, call: message_text(m),
        )

    def custom_call(self, name: str) -> tuple[str, str]:
        return custom_begin(name), CALL

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        answer = _final({"type": "any_text", "excludes": FRAMING})
        if choice.mode == ToolChoiceMode.NONE:
            return _after_analysis(answer)
        tags = [
            {
                "type": "tag",
                "begin": custom_begin(t.name) if t.custom else call_begin(t.name),
                "content": schemas[t.name] if t.custom else schema_content(schemas[t.name]),
                "end": CALL,
            }
            for t in choice.callable(tools)
        ]
        calls = {
            "type": "tags_with_separator",
            "tags": tags,
            "separator": NEXT,
            "at_least_one": True,
            "stop_after_first": not parallel,
        }
        if choice.mode == ToolChoiceMode.AUTO:
            return _after_analysis({"type": "or", "elements": [answer, calls]})
        return _after_analysis(calls)

    def answer(self, content: dict) -> dict:
        """A response_format answer: in the final channel, after the optional analysis."""
        return _after_analysis(_final(content))

    def extractor(self, tools: list[Tool]) -> HarmonyExtractor:
        return HarmonyExtractor(
            {t.name for t in tools if not t.custom}, frozenset(t.name for t in tools if t.custom)
        )


def _final(content: dict) -> dict:
    return {"type": "sequence", "elements": [{"type": "const_string", "value": FINAL}, content]}


def _after_analysis(rest: dict) -> dict:
    """At most one analysis message (reasoning, free but for the framing), then `rest`."""
    analysis = {
        "type": "tag",
        "begin": ANALYSIS,
        "content": {"type": "any_text", "excludes": FRAMING},
        "end": END + NEXT,
    }
    return {"type": "sequence", "elements": [{"type": "optional", "content": analysis}, rest]}
