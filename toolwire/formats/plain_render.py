"""Rendering tool conversations for chat templates that know nothing of tools.

The model's own template still frames every turn; this only rewrites the turns: tools into the
system message, past calls into the assistant's text as the format writes them, tool results
into turns of the format's result role.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolwire.vocabulary import ToolChoiceMode

from .inputs import Tool, message_text


@dataclass(frozen=True)
class PlainStyle:
    tools_block: Callable[[list[Tool]], str]  # appended to the system message
    calls_text: Callable[[list[dict]], str]  # an assistant turn's calls, as the model writes them
    result_text: Callable[[dict, dict | None], str]  # a tool message (and the call it answers)
    result_role: str = "user"
    results_joiner: str | None = "\n"  # consecutive results share one turn; None: a turn each
    # With tool_choice none no call can be made, and a block that tells the model how to write
    # one contradicts the constraint that bans it: a small model then loops on markup.
    tools_with_choice_none: bool = True


def template_renders_tools(tokenizer: Any) -> bool:
    return "tools" in (getattr(tokenizer, "chat_template", None) or "")


def render_plain(
    tokenizer: Any,
    messages: list[dict],
    tools: list[Tool],
    style: PlainStyle,
    choice_mode: ToolChoiceMode = ToolChoiceMode.AUTO,
    **template_kwargs,
) -> str:
    out: list[dict] = []
    rest = list(messages)
    system = (
        message_text(rest.pop(0)) if rest and rest[0]["role"] in ("system", "developer") else None
    )
    if tools and (choice_mode != ToolChoiceMode.NONE or style.tools_with_choice_none):
        block = style.tools_block(tools)
        system = f"{system}\n\n{block}" if system else block
    if system is not None:
        out.append({"role": "system", "content": system})
    calls_by_id: dict[str, dict] = {}
    last_was_result = False
    for m in rest:
        role = m["role"]
        if role == "tool":
            text = style.result_text(m, calls_by_id.get(m.get("tool_call_id") or ""))
            if last_was_result and style.results_joiner is not None:
                out[-1]["content"] += style.results_joiner + text
            else:
                out.append({"role": style.result_role, "content": text})
            last_was_result = True
            continue
        last_was_result = False
        text = message_text(m)
        if role == "assistant":
            if not text and m.get("refusal"):
                text = m["refusal"]
            calls = m.get("tool_calls") or []
            for c in calls:
                calls_by_id[c.get("id") or ""] = c
            if calls:
                text = (text + "\n" if text else "") + style.calls_text(calls)
        out.append({"role": "system" if role == "developer" else role, "content": text})
    return tokenizer.apply_chat_template(
        out, add_generation_prompt=True, tokenize=False, **template_kwargs
    )


def arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments


def with_parsed_arguments(message: dict) -> dict:
    """Templates that render tools expect a call's arguments as an object, not a JSON string."""
    if not message.get("tool_calls"):
        return message
    return {
        **message,
        "tool_calls": [
            {
                **c,
                "function": {
                    **c["function"],
                    "arguments": arguments_object(c["function"]["arguments"]),
                },
            }
            if c.get("type") != "custom"  # a custom call's input is raw text: as it is
            else c
            for c in message["tool_calls"]
        ],
    }


def render_native(tokenizer: Any, messages: list[dict], tools: list[Tool], **extra) -> str:
    """The model's own template, given the tools the way Hugging Face templates take them."""
    return tokenizer.apply_chat_template(
        [with_parsed_arguments(m) for m in messages],
        tools=[t.openai_dict() for t in tools] or None,
        add_generation_prompt=True,
        tokenize=False,
        **extra,
    )
