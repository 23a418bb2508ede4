"""One request's extraction: detokenize, cut at stop strings, read tool calls into deltas.

Why a class of its own: the per-request Extract RPC and the multiplexed ExtractStream (extract_stream.py)
both drive this one object, so a request's deltas cannot differ between the two paths.
"""

from __future__ import annotations

from toolwire.errors import RequestError
from toolwire.formats import Delta, get_format
from toolwire.formats.reasoning import ContentOnly, ReasoningExtractor
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.request.from_proto import choice_from_proto, tool_from_proto
from toolwire.vocabulary import FinishReason, ToolChoiceMode
from toolwire.wire_enums import set_finish

from .detokenizer import IncrementalDetokenizer
from .stop_strings import StopStrings


class MarkerWatch:
    """Whether the content streamed so far holds the call marker (a call left unparsed), across
    piece boundaries."""

    def __init__(self, marker: str):
        self.marker, self.tail, self.seen = marker, "", False

    def marker_in(self, content: str) -> bool:
        if self.marker and not self.seen and content:
            text = self.tail + content
            self.seen = self.marker in text
            self.tail = text[len(text) - len(self.marker) + 1 :]
        return self.seen


def finish_reason(decode_reason: str, calls: int) -> str:
    """The turn's finish reason from decode's (a FinishReason's string, as the proto carries
    it): STOP with calls read is TOOL_CALLS, as OpenAI reports it."""
    if decode_reason == FinishReason.STOP and calls:
        return FinishReason.TOOL_CALLS
    return decode_reason


class Extraction:
    """Built from an ExtractSetup (a RequestError if it names no known format); `tokens` and
    `end` return the ExtractResponse to send, or None when there is nothing to send yet."""

    def __init__(self, setup: pb.ExtractSetup, tokenizer, default_format: str):
        try:
            fmt = get_format(setup.tool_format or default_format, tokenizer)
        except ValueError as e:
            raise RequestError(str(e), "tool_format") from None
        tools = [tool_from_proto(t) for t in setup.tools]
        choice = choice_from_proto(setup.tool_choice, bool(tools))
        # With tool_choice none (or no tools) the call marker is banned: all text is content.
        # It reads calls of the tools the choice lets the model call (allowed_tools, named):
        # anything else is content.
        extractor = (
            fmt.extractor(choice.callable(tools) if choice.mode != ToolChoiceMode.NONE else [])
            if (tools and choice.mode != ToolChoiceMode.NONE) or fmt.frames_all_output
            else None
        )
        if extractor is not None and choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED):
            extractor.calls_enforced = True  # the template's constraint: calls only
        if setup.reasoning:
            extractor = ReasoningExtractor(extractor or ContentOnly(), setup.reasoning)
        self.extractor = extractor
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stops = StopStrings(list(setup.stop))
        self.seen = MarkerWatch(fmt.call_marker if extractor is not None else "")
        self.done = False  # the last response was returned
        self.unparsed = False  # the content held the call marker but no call was read
        # Plain text (no format to read calls in, no reasoning, no stop strings): a chunk's
        # response would be its text and nothing else, so `tokens` gives the text alone and
        # the multiplexed stream sends it without building a response (extract_stream.py).
        self.plain = extractor is None and not self.stops.stops
        self.taken = 0  # completion tokens taken: the usage of a turn a stop string ended

    def _respond(self, delta: Delta, final: bool) -> pb.ExtractResponse:
        stops = self.stops
        content = stops.feed(delta.content) + (stops.flush() if final and not stops.hit else "")
        return pb.ExtractResponse(
            content=content,
            reasoning_content=delta.reasoning,
            tool_calls=[
                pb.ToolCallDelta(
                    index=c.index,
                    id=c.id or "",
                    name=c.name or "",
                    arguments=c.arguments,
                    custom=c.custom,
                )
                for c in delta.calls
            ],
        )

    def _parse(self, text: str, final: bool) -> Delta:
        if self.extractor is None:
            return Delta(content=text)
        out = self.extractor.feed(text)
        if final:
            out.extend(self.extractor.finish())
        return out

    def text_or_tokens(self, ids) -> pb.ExtractResponse | str | None:
        """`tokens`, except that a plain request's response (self.plain) comes as its text."""
        if self.plain:
            self.taken += len(ids)
            return self.detok.add(list(ids)) or None
        return self.tokens(ids)

    def tokens(self, ids) -> pb.ExtractResponse | None:
        """New token ids; a response with finish reason STOP when a stop string ended it."""
        self.taken += len(ids)
        resp = self._respond(self._parse(self.detok.add(list(ids)), False), False)
        if self.stops.hit:
            set_finish(resp, FinishReason.STOP)
            resp.usage.completion_tokens = self.taken
            self.done = True
            return resp
        if resp.content or resp.tool_calls or resp.reasoning_content:
            self.seen.marker_in(resp.content)
            return resp
        return None

    def end(self, decode_reason: str, usage: common.Usage | None = None) -> pb.ExtractResponse:
        """The last response, with the turn's finish reason, and `usage` (decode's counts, for
        a routed request) or the completion tokens taken."""
        resp = self._respond(self._parse(self.detok.flush(), True), True)
        if usage is not None:
            resp.usage.CopyFrom(usage)
        else:
            resp.usage.completion_tokens = self.taken
        calls = self.extractor.call_count if self.extractor else 0
        self.unparsed = self.seen.marker_in(resp.content)
        set_finish(
            resp, FinishReason.STOP if self.stops.hit else finish_reason(decode_reason, calls)
        )
        self.done = True
        return resp
