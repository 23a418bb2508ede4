"""The Hermes tool format (Qwen2.5, Qwen3, Hermes, and the embedded SmolLM2).

Prompt: tools as JSON lines inside <tools></tools> in the system turn; past calls as
<tool_call>{"name": ..., "arguments": ...}</tool_call>; tool results as <tool_response> blocks
in a user turn. Output: the same <tool_call> blocks, one per call, separated by newlines.
"""

from __future__ import annotations

import json
from typing import Any

from .base import Tool, ToolChoice, ToolFormat, arguments_text, message_text
from .marked_calls import CallSyntax, MarkedCallExtractor

MARKER = "<tool_call>"
CLOSE = "}\n</tool_call>"

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


SYNTAX = CallSyntax(
    marker=MARKER,
    header=r'\s*\{\s*"name"\s*:\s*"(?P<name>[^"\\]*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*',
    close=r"\s*\}\s*</tool_call>",
)


def call_begin(name: str) -> str:
    return f'{MARKER}\n{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '


def template_renders_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None) or ""
    return "tools" in template


class HermesFormat(ToolFormat):
    name = "hermes"
    call_marker = MARKER

    def render(self, tokenizer: Any, messages: list[dict], tools: list[Tool]) -> str:
        if template_renders_tools(tokenizer):
            return tokenizer.apply_chat_template(
                [_with_parsed_arguments(m) for m in messages],
                tools=[t.openai_dict() for t in tools] or None,
                add_generation_prompt=True, tokenize=False)
        return tokenizer.apply_chat_template(
            self.plain_messages(messages, tools), add_generation_prompt=True, tokenize=False)

    def plain_messages(self, messages: list[dict], tools: list[Tool]) -> list[dict]:
        """Rewrite tool-bearing messages as plain-text turns for a template without tools."""
        out: list[dict] = []
        rest = list(messages)
        system = None
        if rest and rest[0]["role"] in ("system", "developer"):
            system = message_text(rest.pop(0))
        if tools:
            block = TOOLS_PREAMBLE + "".join(
                "\n" + json.dumps(t.openai_dict(), ensure_ascii=False) for t in tools
            ) + TOOLS_POSTAMBLE
            system = f"{system}\n\n{block}" if system else block
        if system is not None:
            out.append({"role": "system", "content": system})
        for m in rest:
            role = m["role"]
            if role == "tool":
                text = f"<tool_response>\n{message_text(m)}\n</tool_response>"
                if out and out[-1].get("_tool_results"):
                    out[-1]["content"] += "\n" + text
                else:
                    out.append({"role": "user", "content": text, "_tool_results": True})
                continue
            if role == "developer":
                role = "system"
            text = message_text(m)
            if role == "assistant":
                if not text and m.get("refusal"):
                    text = m["refusal"]
                calls = [
                    call_begin(c["function"]["name"]) + arguments_text(c["function"]["arguments"])
                    + CLOSE for c in m.get("tool_calls") or []
                ]
                text = "\n".join(([text] if text else []) + calls)
            out.append({"role": role, "content": text})
        for m in out:
            m.pop("_tool_results", None)
        return out

    def constraint(self, tools: list[Tool], schemas: dict[str, Any], choice: ToolChoice,
                   parallel: bool) -> dict:
        if choice.mode == "none":
            return {"type": "any_text", "excludes": [MARKER]}
        chosen = [t for t in tools if choice.mode != "named" or t.name == choice.name]
        tags = [{
            "type": "tag",
            "begin": call_begin(t.name),
            "content": {"type": "json_schema", "json_schema": schemas[t.name],
                        "max_whitespace_cnt": 1},
            "end": CLOSE,
        } for t in chosen]
        if choice.mode == "auto":
            return {"type": "triggered_tags", "triggers": [MARKER], "tags": tags,
                    "at_least_one": False, "stop_after_first": not parallel}
        # required / named: calls only, at least one.
        return {"type": "tags_with_separator", "tags": tags, "separator": "\n",
                "at_least_one": True, "stop_after_first": not parallel}

    def extractor(self, tools: list[Tool]) -> MarkedCallExtractor:
        return MarkedCallExtractor(SYNTAX, {t.name for t in tools})


def _with_parsed_arguments(message: dict) -> dict:
    """Templates that render tools expect arguments as objects, not JSON strings."""
    if not message.get("tool_calls"):
        return message
    m = dict(message)
    m["tool_calls"] = [
        {**c, "function": {**c["function"],
                           "arguments": json.loads(c["function"]["arguments"] or "{}")}}
        for c in message["tool_calls"]
    ]
    return m
