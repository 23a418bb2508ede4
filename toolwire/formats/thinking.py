"""OpenAI's `reasoning_effort` as the model's own thinking switch.

Open models take it through their chat template, each under its own name: Qwen3, Qwen3.5/3.6
and GLM `enable_thinking` (on or off), DeepSeek V3.1 and Kimi K2.5 `thinking` (on or off),
gpt-oss `reasoning_effort` (low, medium, high; written in its system message). The name is read
from the template's own statements. An on/off model thinks for every effort but `none`: it
cannot grade its effort, and docs/constraints.md says so. A model with no switch refuses any effort but
`none` (as OpenAI refuses reasoning_effort for a model that does not reason), and `none` on a
model that thinks without a switch is refused too: it would think anyway.
"""

from __future__ import annotations

import re
from typing import Any

from toolwire.errors import RequestError, unsupported_value

from .reasoning import OPEN

GRADED = ("low", "medium", "high")  # gpt-oss's levels
_STATEMENT = re.compile(r"\{%-?(.*?)-?%\}", re.S)


def template_switch(template: str) -> str | None:
    """The variable the template's own statements read as its thinking switch, if any."""
    code = " ".join(_STATEMENT.findall(template))
    for name in ("reasoning_effort", "enable_thinking", "thinking"):
        if re.search(rf"(?<![\w.]){name}(?!\w)", code):
            return name
    return None


def _refuse(why: str) -> RequestError:
    return unsupported_value("reasoning_effort", why)


def template_kwargs(tokenizer: Any, effort: str | None, own_switch: str | None = None) -> dict:
    """The chat template's keyword arguments for `effort` (unset: {} and the template's default).
    own_switch: the switch the format writes itself when the template has none (gpt-oss's
    levels, DeepSeek V3.2/V4's thinking)."""
    if effort is None:
        return {}
    template = getattr(tokenizer, "chat_template", None) or ""
    switch = template_switch(template) or own_switch
    if switch == "reasoning_effort":
        if effort not in GRADED:
            raise _refuse(f"this model reasons at one of {', '.join(GRADED)}; got {effort!r}")
        return {"reasoning_effort": effort}
    if switch:
        return {switch: effort != "none"}
    if effort == "none" and OPEN not in template:
        return {}  # a model that never thinks: none is what it does
    raise _refuse(
        "reasoning_effort is not supported with this model: its chat template has no "
        "thinking switch"
    )
