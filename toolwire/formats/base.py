"""The tool-format interface: renderer, constraint builder and streaming extractor side by side.

Each model family's format lives in one module holding all three, so the prompt the model sees,
the grammar that constrains it and the parser that reads its output cannot drift apart.
"""

from __future__ import annotations

import json
import secrets
import string
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toolwire.errors import unsupported
from toolwire.vocabulary import ToolChoiceMode

from .inputs import Tool, ToolChoice, custom_involved
from .plain_render import render_native, render_plain, template_renders_tools

_ALNUM = string.ascii_letters + string.digits


def new_call_id() -> str:
    """OpenAI's shape: call_ + 24 letters and digits."""
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


@dataclass
class CallDelta:
    index: int
    arguments: str = ""
    id: str | None = None  # first delta of a call only
    name: str | None = None  # first delta of a call only
    custom: bool = False  # first delta only: a custom tool's call, `arguments` its raw input


@dataclass
class Delta:
    content: str = ""
    reasoning: str = ""
    calls: list[CallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.calls)

    def extend(self, other: Delta) -> None:
        self.content += other.content
        self.reasoning += other.reasoning
        self.calls.extend(other.calls)


class StreamingExtractor(ABC):
    """Turns generated text, piece by piece, into content and tool-call deltas."""

    # The request's constraint makes the output calls only (tool_choice required or named):
    # a call's header cannot turn out malformed, so its name may go out before its arguments
    # open (Extraction sets it; extractors that hold a header back honour it).
    calls_enforced: bool = False
    # Calls completed so far: the index of the call being read (_args reads it).
    calls: int

    @abstractmethod
    def feed(self, text: str) -> Delta: ...

    @abstractmethod
    def finish(self) -> Delta: ...

    @property
    @abstractmethod
    def call_count(self) -> int: ...

    def parse_complete(self, text: str) -> Delta:
        out = self.feed(text)
        out.extend(self.finish())
        return out

    def _args(self, out: Delta, text: str) -> None:
        """An argument fragment of the call being read (index `self.calls`), merged into this
        delta's last fragment of that call."""
        if out.calls and out.calls[-1].index == self.calls:
            out.calls[-1].arguments += text
        else:
            out.calls.append(CallDelta(index=self.calls, arguments=text))


class TrimmedContent:
    """Content as the marker-scanning extractors emit it (marked_calls, xml_calls): leading
    whitespace dropped, trailing whitespace held until more content follows (a call may come
    next, and the space before it is layout, not content)."""

    pending_ws = ""
    content_started = False

    def _content(self, out: Delta, text: str, final: bool = False) -> None:
        text = self.pending_ws + text
        self.pending_ws = ""
        if not self.content_started:
            text = text.lstrip()
        stripped = text.rstrip()
        if not final:
            self.pending_ws = text[len(stripped) :]
        if stripped:
            out.content += stripped
            self.content_started = True


class ToolFormat(ABC):
    """One model family's tool format."""

    name: str
    call_marker: str  # the text that opens a call in the model's output
    # Text that opens a tool result in the prompt: the caller's to write, never the model's,
    # so constraints ban it from free text (a small model otherwise echoes it).
    result_markers: tuple[str, ...] = ()
    # The family's tag prefixes: with tool_choice none no tag of it is the model's to open
    # (a small model invents neighbours such as <tool_call_response>).
    tag_prefixes: tuple[str, ...] = ()
    # The family frames every output message (Harmony's channels): its extractor reads the
    # output even with no tools, and a response_format answer goes in its frame (`answer`).
    frames_all_output: bool = False
    # Special tokens that end the model's turn besides the tokenizer's eos (GLM ends a turn with
    # <|user|> or, after calls, <|observation|>; its tokenizer's eos is <|endoftext|>).
    turn_end_tokens: tuple[str, ...] = ()
    # The thinking switch the format honours where toolwire writes the prompt itself (no
    # template to read it from, formats/thinking.py): gpt-oss's graded `reasoning_effort`,
    # DeepSeek V3.2/V4's on/off `thinking`.
    own_switch: str | None = None
    # The model's own template would declare custom tools as functions (DeepSeek V3.1, gpt-oss):
    # with a custom tool offered or in the history, the format writes the prompt itself.
    template_misreads_custom: bool = False

    def uses_template(self, tokenizer: Any, messages: list[dict], tools: list[Tool]) -> bool:
        """Whether the model's own chat template renders this conversation."""
        return template_renders_tools(tokenizer) and not (
            self.template_misreads_custom and custom_involved(messages, tools)
        )

    def render(
        self,
        tokenizer: Any,
        messages: list[dict],
        tools: list[Tool],
        choice_mode: ToolChoiceMode = ToolChoiceMode.AUTO,
        template_kwargs: dict | None = None,
    ) -> str:
        """Messages (OpenAI-shaped dicts) and tools into the prompt text, generation prompt
        added: the model's own template where it renders tools, else this format's plain style
        (which may leave the tools out under tool_choice none). template_kwargs: the chat
        template's switches (formats/thinking.py)."""
        self._check_custom_history(messages)
        kw = template_kwargs or {}
        if self.uses_template(tokenizer, messages, tools):
            return render_native(tokenizer, messages, tools, **kw)
        return render_plain(tokenizer, messages, tools, self.plain_style(), choice_mode, **kw)

    @abstractmethod
    def plain_style(self) -> Any:
        """How tools, past calls and results are written for a template without tools."""

    @abstractmethod
    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        """The xgrammar structural tag (as a dict) enforcing the tool_choice mode."""

    @abstractmethod
    def extractor(self, tools: list[Tool]) -> StreamingExtractor: ...

    def unenforceable(self, schema: Any) -> str | None:
        """Why this format cannot write a strict schema's arguments exactly (None: it can)."""
        return None

    def _check_custom_history(self, messages: list[dict]) -> None:
        if self.custom_call("x") is not None:
            return
        for i, m in enumerate(messages):
            for j, c in enumerate(m.get("tool_calls") or []):
                if c.get("type") == "custom":
                    raise unsupported(
                        f"messages[{i}].tool_calls[{j}]",
                        f"custom tool calls are not supported with the {self.name} tool "
                        "format (its calls have no place for raw input)",
                    )

    def answer(self, content: dict) -> dict:
        """A text answer held to `content` (response_format), as the family frames it."""
        return content

    def custom_call(self, name: str) -> tuple[str, str] | None:
        """How a custom tool's call is written: (begin, end) around its raw input, the call
        syntax's own place for a payload. None: the family has no such place (refused, 400)."""
        return None


def custom_tag(fmt: ToolFormat, tool: Tool, content: dict) -> dict:
    """A custom tool's call as a structural tag: its wrapping, the input's grammar inside."""
    wrapping = fmt.custom_call(tool.name)
    # Custom calls reach a tag only in families that have a place for them (others refused).
    assert wrapping is not None, f"{fmt.name} has no custom call syntax"
    begin, end = wrapping
    return {"type": "tag", "begin": begin, "content": content, "end": end}


def call_tags(
    fmt: ToolFormat,
    tools: list[Tool],
    schemas: dict[str, Any],
    choice: ToolChoice,
    begin: Callable[[str], str],
    end: str,
    content: Callable[[Any], dict] | None = None,
) -> list[dict]:
    """One structural tag per tool the choice lets the model call: a custom tool's raw input in
    the family's custom wrapping, a function's arguments (`content` of its schema, JSON by
    default) between `begin(name)` and `end`."""
    content = content or schema_content
    return [
        custom_tag(fmt, t, schemas[t.name])
        if t.custom
        else {
            "type": "tag",
            "begin": begin(t.name),
            "content": content(schemas[t.name]),
            "end": end,
        }
        for t in choice.callable(tools)
    ]


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of marker: text to hold
    back while streaming, since the next piece may complete the marker."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def arguments_text(arguments: str) -> str:
    """A past call's arguments as they go back into the prompt: the JSON the model would write."""
    try:
        return json.dumps(json.loads(arguments or "{}"), ensure_ascii=False)
    except json.JSONDecodeError:
        return arguments


# -- constraint pieces shared by the formats -----------------------------------------------
def schema_content(schema: Any) -> dict:
    # One whitespace at most between JSON tokens: compact arguments cost fewer tokens.
    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": 1}


def calls_constraint(
    tags: list[dict], triggers: list[str], separator: str, choice: ToolChoice, parallel: bool
) -> dict:
    """Formats whose every call carries its marker: free text until a trigger in auto; calls
    only, at least one, in required and named; one call at most without parallel calls."""
    if choice.mode == ToolChoiceMode.NONE:
        return {"type": "any_text", "excludes": triggers}
    if choice.mode == ToolChoiceMode.AUTO:
        return {
            "type": "triggered_tags",
            "triggers": triggers,
            "tags": tags,
            "at_least_one": False,
            "stop_after_first": not parallel,
        }
    return {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": separator,
        "at_least_one": True,
        "stop_after_first": not parallel,
    }


def block_constraint(
    tags: list[dict],
    begin: str,
    end: str,
    separator: str,
    choice: ToolChoice,
    parallel: bool,
    trigger: str | None = None,
) -> dict:
    """Formats that put all calls in one marked block (a list): one block, its calls inside."""
    trigger = trigger or begin
    if choice.mode == ToolChoiceMode.NONE:
        return {"type": "any_text", "excludes": [trigger]}
    inner = {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": separator,
        "at_least_one": True,
        "stop_after_first": not parallel,
    }
    block = {"type": "tag", "begin": begin, "content": inner, "end": end}
    if choice.mode == ToolChoiceMode.AUTO:
        return {
            "type": "triggered_tags",
            "triggers": [trigger],
            "tags": [block],
            "at_least_one": False,
            "stop_after_first": True,
        }
    return {
        "type": "tags_with_separator",
        "tags": [block],
        "separator": "",
        "at_least_one": True,
        "stop_after_first": True,
    }
