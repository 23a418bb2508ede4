"""What a tool format is given: the request's tools and tool choice, in plain form
(toolwire/request/convert.py makes them from the protos), and each message's text.

They sit below the format interface (base.py) and the plain renderer (plain_render.py), which
both use them, so neither imports the other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolwire.vocabulary import ToolChoiceMode


@dataclass
class Tool:
    name: str
    description: str = ""
    parameters: dict | None = None  # None: the tool takes no parameters
    strict: bool = False
    # A custom tool (OpenAI's {"type": "custom"}): its call's input is raw text, in `grammar`
    # ("text", "") or ("lark" | "regex", definition).
    custom: bool = False
    grammar: tuple[str, str] = ("text", "")

    def openai_dict(self) -> dict:
        if self.custom:
            syntax, definition = self.grammar
            fmt: dict[str, Any] = {"type": "text"}
            if syntax != "text":
                fmt = {"type": "grammar", "grammar": {"syntax": syntax, "definition": definition}}
            cu: dict[str, Any] = {"name": self.name}
            if self.description:
                cu["description"] = self.description
            cu["format"] = fmt
            return {"type": "custom", "custom": cu}
        fn: dict[str, Any] = {"name": self.name}
        if self.description:
            fn["description"] = self.description
        fn["parameters"] = (
            self.parameters if self.parameters is not None else {"type": "object", "properties": {}}
        )
        return {"type": "function", "function": fn}


@dataclass
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None  # the forced tool when mode is NAMED
    # allowed_tools: calls (in auto or required) only of these; every tool stays in the prompt.
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.mode = ToolChoiceMode(self.mode)  # a plain string ("required") becomes its member

    def callable(self, tools: list[Tool]) -> list[Tool]:
        """The tools a call may name under this choice (all of them in the prompt)."""
        if self.mode == ToolChoiceMode.NAMED:
            return [t for t in tools if t.name == self.name]
        if self.allowed is not None:
            return [t for t in tools if t.name in self.allowed]
        return list(tools)


def message_text(message: dict) -> str:
    """A message's content as one string (text parts joined)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content)


def call_name(call: dict) -> str:
    """A past call's tool name, function or custom."""
    body = call.get("custom") if call.get("type") == "custom" else call.get("function")
    assert body is not None, "a validated call holds its function or custom part"
    return body["name"]


def custom_involved(messages: list[dict], tools: list[Tool]) -> bool:
    """A custom tool offered, or a custom call in the history: no model's own template knows
    them."""
    return any(t.custom for t in tools) or any(
        c.get("type") == "custom" for m in messages for c in m.get("tool_calls") or []
    )
