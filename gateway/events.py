"""What a run produces, as typed events: the one stream every presentation renders.

A run (run.py) yields these in the order the model wrote them; chat SSE, chat JSON and the gRPC
ChatService (chat_render.py) render the same events, and the Responses API is one more renderer
of them. No event knows a wire format: ids, indexes and texts as the extractor read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolwire.errors import RequestError
from toolwire.vocabulary import FinishReason


@dataclass(slots=True, frozen=True)
class Content:
    """Answer text, in order."""

    text: str


@dataclass(slots=True, frozen=True)
class Reasoning:
    """Thinking text (the model family's reasoning section), in order."""

    text: str


@dataclass(slots=True, frozen=True)
class CallOpened:
    """A tool call starts: its arguments (or a custom tool's input) follow as fragments."""

    index: int  # the call's place in this turn, 0 first
    id: str  # call_...
    name: str
    custom: bool  # a custom tool's call: raw input, not JSON arguments


@dataclass(slots=True, frozen=True)
class Arguments:
    """A fragment of a function call's JSON arguments; the fragments concatenate."""

    index: int
    text: str


@dataclass(slots=True, frozen=True)
class CustomInput:
    """A fragment of a custom tool call's raw input; the fragments concatenate."""

    index: int
    text: str


@dataclass(slots=True, frozen=True)
class Finish:
    """The turn ended: stop, length or tool_calls. Always followed by Usage."""

    reason: FinishReason


@dataclass(slots=True, frozen=True)
class Usage:
    """The turn's token counts; the last event of a run that finished."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True, frozen=True)
class Failed:
    """The run failed after it started (a service died, decode aborted): the last event. What
    came before it was delivered; a presentation ends its stream with this error."""

    error: RequestError


Event = Content | Reasoning | CallOpened | Arguments | CustomInput | Finish | Usage | Failed
