"""Models that think before they answer: <think>...</think> first, then the answer.

The reasoning text goes to `reasoning_content` and never reaches the tool-call extractor; the
constraint lets the reasoning run free and applies from `</think>` on.
"""

from __future__ import annotations

from typing import Any

from toolwire.vocabulary import ReasoningMode

from .base import Delta, StreamingExtractor, partial_suffix

OPEN, CLOSE = "<think>", "</think>"
# The modes under their older names, for the imports that still use them; new code says
# ReasoningMode.
NONE, OPTIONAL, STARTED = ReasoningMode.NONE, ReasoningMode.OPTIONAL, ReasoningMode.STARTED


def reasoning_mode(tokenizer: Any, prompt: str) -> ReasoningMode:
    """STARTED when the prompt itself opened <think>; NONE when it closed it (DeepSeek V3.1+
    and Kimi K2.5 answer without thinking after a prompt ending in `</think>`); OPTIONAL when
    the model's template knows <think> (the model may open it), else NONE. The prompt decides
    first: DeepSeek V3.2/V4 have no template, toolwire writes their prompt (formats/dsml.py)."""
    tail = prompt.rstrip()
    if tail.endswith(OPEN):
        return ReasoningMode.STARTED
    if tail.endswith(CLOSE) or OPEN not in (getattr(tokenizer, "chat_template", None) or ""):
        return ReasoningMode.NONE
    return ReasoningMode.OPTIONAL


def wrap_constraint(fmt: dict, mode: str) -> dict:
    """The structural-tag format `fmt`, preceded by free reasoning (`mode` a ReasoningMode, or
    the string a proto carried)."""
    if mode == ReasoningMode.NONE:
        return fmt
    think = {
        "type": "tag",
        "begin": "" if mode == ReasoningMode.STARTED else OPEN,
        "content": {"type": "any_text"},
        "end": CLOSE,
    }
    if mode == ReasoningMode.OPTIONAL:
        think = {"type": "optional", "content": think}
    return {"type": "sequence", "elements": [think, fmt]}


class ContentOnly(StreamingExtractor):
    """No tools (or tool_choice none): all text is content."""

    def feed(self, text: str) -> Delta:
        return Delta(content=text)

    def finish(self) -> Delta:
        return Delta()

    @property
    def call_count(self) -> int:
        return 0


class ReasoningExtractor(StreamingExtractor):
    def __init__(self, inner: StreamingExtractor, mode: str):
        self.inner = inner
        self.state = "think" if mode == ReasoningMode.STARTED else "maybe"
        self.buf = ""
        self.started_reasoning = False

    @property
    def call_count(self) -> int:
        return self.inner.call_count

    def feed(self, text: str) -> Delta:
        out = Delta()
        self.buf += text
        if self.state == "maybe":
            head = self.buf.lstrip()
            if head.startswith(OPEN):
                self.buf, self.state = head[len(OPEN) :], "think"
            elif OPEN.startswith(head):
                return out  # could still be <think>
            else:
                self.state = "answer"
        if self.state == "think":
            at = self.buf.find(CLOSE)
            if at < 0:
                keep = partial_suffix(self.buf, CLOSE)
                text = self.buf[: len(self.buf) - keep]
                sure = text.rstrip()  # whitespace right before </think> is not reasoning
                self._reason(out, sure)
                self.buf = self.buf[len(sure) :]
                return out
            self._reason(out, self.buf[:at].rstrip())
            self.buf, self.state = self.buf[at + len(CLOSE) :].lstrip(), "answer"
        if self.state == "answer" and self.buf:
            out.extend(self.inner.feed(self.buf))
            self.buf = ""
        return out

    def _reason(self, out: Delta, text: str) -> None:
        if not self.started_reasoning:
            text = text.lstrip()
        if text:
            out.reasoning += text
            self.started_reasoning = True

    def finish(self) -> Delta:
        out = Delta()
        if self.state == "think":
            self._reason(out, self.buf.rstrip())
        elif self.buf:
            out.extend(self.inner.feed(self.buf))
        self.buf = ""
        out.extend(self.inner.finish())
        return out
