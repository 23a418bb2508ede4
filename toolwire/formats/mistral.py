"""Mistral tool calls.

- `[TOOL_CALLS]name[ARGS]{...}` per call (tokenizers v11 and later: they have [ARGS]);
- `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]` (older tokenizers; Tekken v3 writes
  no space after the marker, sentencepiece v3 does: `list_space`).
Tools are listed in [AVAILABLE_TOOLS]; results come back in [TOOL_RESULTS]. Mistral call ids
are 9 letters and digits: OpenAI ids are mapped to them (stably, so a call and its result
agree) when rendered into the prompt.

Custom tools (raw input): `[TOOL_CALLS]name[ARGS]INPUT`, the payload slot the family already
has, holding the input as it is instead of a JSON object. Nothing closes [ARGS] in Mistral's
format (a JSON object closes itself): the input runs to the next [TOOL_CALLS] or the end of the
output, so it may not contain [TOOL_CALLS] (free text is held to that; a regex or Lark input
ends where its grammar lets the next call or the end follow). The older list form
(`[TOOL_CALLS] [{"name": ..., "arguments": ...}]`) has no raw slot: a payload there is a JSON
string, whose escaping a Lark or regex grammar over the raw text cannot be enforced through, so
custom tools stay a 400 on tokenizers without [ARGS].
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from typing import Any

from toolwire.vocabulary import ToolChoiceMode

from .base import (
    ToolFormat,
    arguments_text,
    block_constraint,
    calls_constraint,
    custom_tag,
    schema_content,
)
from .inputs import Tool, ToolChoice, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor, extractor_for
from .plain_render import PlainStyle

MARKER = "[TOOL_CALLS]"
_ALNUM = string.ascii_letters + string.digits
_MISTRAL_ID = re.compile(r"^[A-Za-z0-9]{9}$")


_HEADER = r"\[TOOL_CALLS\]\s*(?P<name>[A-Za-z0-9_.\-]{1,64})(?:\[CALL_ID\][A-Za-z0-9]{9})?\[ARGS\]"
ARGS_SYNTAX = CallSyntax(
    markers=(MARKER,),
    header=_HEADER,
    close=r"",
    custom_header=_HEADER,
    custom_end=MARKER,
    custom_end_is_next_call=True,
)


def _until_next_call(content: dict) -> dict:
    """A custom input's content, which the next call's marker ends: free text may not hold it."""
    if content.get("type") == "any_text":
        return {**content, "excludes": [*content.get("excludes", []), MARKER]}
    return content


def starts_with_space(tokenizer: Any) -> bool:
    """Whether the tokenizer writes a text's start with a space (sentencepiece's "▁"), as
    mistral-common's v3 sentencepiece encoder does after [TOOL_CALLS]; Tekken writes none."""
    if tokenizer is None:
        return True
    pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("[", add_special_tokens=False))
    return bool(pieces) and pieces[0].startswith("▁")


def mistral_id(openai_id: str) -> str:
    """A 9-character id for the prompt; ids already in Mistral's shape pass unchanged."""
    if _MISTRAL_ID.match(openai_id or ""):
        return openai_id
    n = int.from_bytes(hashlib.sha256((openai_id or "").encode()).digest()[:8], "big")
    out = ""
    for _ in range(9):
        n, r = divmod(n, 62)
        out += _ALNUM[r]
    return out


def _mapped_ids(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {
                **m,
                "tool_calls": [{**c, "id": mistral_id(c.get("id", ""))} for c in m["tool_calls"]],
            }
        if m.get("role") == "tool" and m.get("tool_call_id"):
            m = {**m, "tool_call_id": mistral_id(m["tool_call_id"])}
        out.append(m)
    return out


class MistralFormat(ToolFormat):
    name = "mistral"
    call_marker = MARKER
    result_markers = ("[TOOL_RESULTS]",)

    def __init__(self, args_token: bool = True, list_space: bool = True):
        self.args_token = args_token  # [TOOL_CALLS]name[ARGS]{...}; else the JSON list
        # The list's opening after the marker, as mistral-common's encoder writes it: the JSON
        # encoded on its own, which sentencepiece vocabularies (v3) start with a space ("▁[")
        # and Tekken ones do not ("[").
        self.list_open = MARKER + (" [" if list_space else "[")

    def render(
        self,
        tokenizer: Any,
        messages: list[dict],
        tools: list[Tool],
        choice_mode: ToolChoiceMode = ToolChoiceMode.AUTO,
        template_kwargs: dict | None = None,
    ) -> str:
        return super().render(tokenizer, _mapped_ids(messages), tools, choice_mode, template_kwargs)

    def plain_style(self) -> PlainStyle:
        return PlainStyle(
            tools_block=lambda ts: (
                "[AVAILABLE_TOOLS]"
                + json.dumps([t.openai_dict() for t in ts], ensure_ascii=False)
                + "[/AVAILABLE_TOOLS]"
            ),
            calls_text=self._calls_text,
            result_text=lambda m, call: (
                "[TOOL_RESULTS]"
                + json.dumps(
                    {"content": message_text(m), "call_id": m.get("tool_call_id", "")},
                    ensure_ascii=False,
                )
                + "[/TOOL_RESULTS]"
            ),
            results_joiner="",
        )

    def custom_call(self, name: str) -> tuple[str, str] | None:
        return (f"{MARKER}{name}[ARGS]", "") if self.args_token else None

    def _calls_text(self, calls: list[dict]) -> str:
        if self.args_token:
            return "".join(
                f"{MARKER}{c['custom']['name']}[ARGS]{c['custom']['input']}"
                if c.get("type") == "custom"
                else f"{MARKER}{c['function']['name']}[ARGS]"
                f"{arguments_text(c['function']['arguments'])}"
                for c in calls
            )
        return (
            self.list_open
            + ", ".join(
                f'{{"name": {json.dumps(c["function"]["name"])}, "arguments": '
                f'{arguments_text(c["function"]["arguments"])}, "id": "{c["id"]}"}}'
                for c in calls
            )
            + "]"
        )

    def constraint(
        self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice, parallel: bool
    ) -> dict:
        chosen = choice.callable(tools)
        if self.args_token:
            tags = [
                custom_tag(self, t, _until_next_call(schemas[t.name]))
                if t.custom
                else {
                    "type": "tag",
                    "begin": f"{MARKER}{t.name}[ARGS]",
                    "content": schema_content(schemas[t.name]),
                    "end": "",
                }
                for t in chosen
            ]
            return calls_constraint(tags, [MARKER], "", choice, parallel)
        tags = [
            {
                "type": "tag",
                "begin": f'{{"name": {json.dumps(t.name)}, "arguments": ',
                "content": schema_content(schemas[t.name]),
                "end": "}",
            }
            for t in chosen
        ]
        return block_constraint(tags, self.list_open, "]", ", ", choice, parallel, trigger=MARKER)

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        names = {t.name for t in tools}
        if self.args_token:
            return extractor_for(ARGS_SYNTAX, tools)
        return MarkedCallExtractor(
            CallSyntax(
                markers=(MARKER,),
                opener=r"\[TOOL_CALLS\]\s*\[",
                header=r'\s*\{\s*"name"\s*:\s*"(?P<name>[^"\\]*)"\s*,\s*"arguments"\s*:\s*',
                close=r'\s*(?:,\s*"id"\s*:\s*"[A-Za-z0-9]*"\s*)?\}',
                separator=r"\s*,\s*",
                terminator=r"\s*\]",
            ),
            names,
        )
