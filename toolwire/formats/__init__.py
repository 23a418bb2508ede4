"""Tool-format registry: one module per model family (renderer, constraint, extractor)."""

from __future__ import annotations

from .base import CallDelta, Delta, StreamingExtractor, Tool, ToolChoice, ToolFormat
from .hermes import HermesFormat

FORMATS: dict[str, type[ToolFormat]] = {
    HermesFormat.name: HermesFormat,
}


def get_format(name: str) -> ToolFormat:
    try:
        return FORMATS[name]()
    except KeyError:
        raise ValueError(f"unknown tool format {name!r}; known: {', '.join(sorted(FORMATS))}")


def detect_format(tokenizer) -> str | None:
    """The tool format a model writes, judged from its chat template and special tokens."""
    template = getattr(tokenizer, "chat_template", None) or ""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    if "<tool_call>" in template or "<tool_call>" in vocab:
        return "hermes"
    # ChatML models without tool support (the embedded SmolLM2) take hermes, the format their
    # family's tool-trained successors use.
    if "<|im_start|>" in template:
        return "hermes"
    return None


__all__ = ["CallDelta", "Delta", "FORMATS", "StreamingExtractor", "Tool", "ToolChoice",
           "ToolFormat", "detect_format", "get_format"]
