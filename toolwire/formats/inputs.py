"""What a tool format is given: the request's tools and tool choice, in plain form
(toolwire/request/convert.py makes them from the protos), and each message's text.

They sit below the format interface (base.py) and the plain renderer (plain_render.py), which
both use them, so neither imports the other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Tool:
    name: str
    description: str = ""
    parameters: dict | None = None  # None: the tool takes no parameters
    strict: bool = False

    def openai_dict(self) -> dict:
        fn: dict[str, Any] = {"name": self.name}
        if self.description:
            fn["description"] = self.description
        fn["parameters"] = (
            self.parameters if self.parameters is not None else {"type": "object", "properties": {}}
        )
        return {"type": "function", "function": fn}


@dataclass
class ToolChoice:
    mode: str = "auto"  # auto | none | required | named
    name: str | None = None  # the forced tool when mode == "named"


def message_text(message: dict) -> str:
    """A message's content as one string (text parts joined)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content)
