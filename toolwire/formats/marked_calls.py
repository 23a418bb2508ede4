"""A streaming extractor for formats whose calls are marked in the text.

The shape covers the families toolwire speaks:

    MARKER [OPENER] HEADER ARGS CLOSE [SEPARATOR HEADER ARGS CLOSE ...] [TERMINATOR]

- hermes:   <tool_call> | {"name": "f", "arguments": | {..} | }</tool_call>     (one call a marker)
- mistral:  [TOOL_CALLS] | f[ARGS] | {..} |                                        (one call a marker)
- mistral (list): [TOOL_CALLS] | [ | {"name": "f", "arguments": | {..} | } | , ... | ]
- deepseek_v3: <｜tool▁calls▁begin｜> | <｜tool▁call▁begin｜>function<｜tool▁sep｜>f\\n```json\\n
               | {..} | \\n```<｜tool▁call▁end｜> | ... | <｜tool▁calls▁end｜>

Text outside calls is content. A call's header (which names the tool) is held until complete;
then its argument JSON streams out as it arrives (in one canonical layout, see json_scan); the
close is checked and dropped. Anything that turns out not to be a well-formed call of a known
tool goes back out as content, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

from .base import (
    CallDelta,
    Delta,
    StreamingExtractor,
    TrimmedContent,
    new_call_id,
    partial_suffix,
)
from .inputs import Tool
from .json_scan import JsonValueScanner


@dataclass(frozen=True)
class CallSyntax:
    markers: tuple[str, ...]  # texts where a call may start
    header: str  # regex with a `name` group, ending where the arguments begin
    close: str  # regex from the end of the arguments to the end of the call
    opener: str | None = None  # regex of a list's start (marker included); header follows
    separator: str | None = None  # regex between calls of one marked list
    terminator: str | None = None  # regex that ends a marked list
    # The opener, or else the first header, is matched from the marker on (marker included).
    # A custom tool's call (raw input, no JSON): its header (a regex with a `name` group) and
    # the literal text that ends it (format.custom_call's pair). The input is read up to the
    # first `custom_end`.
    custom_header: str | None = None
    custom_end: str | None = None
    # The custom input's end is not the call's own: it is the next call's marker, left for the
    # next call (mistral: `[TOOL_CALLS]f[ARGS]INPUT[TOOL_CALLS]...`), or the end of the output.
    custom_end_is_next_call: bool = False


_TEXT, _OPEN, _HEADER, _ARGS, _CLOSE, _AFTER, _RAW = range(7)
_STEPS = {
    _RAW: "_step_raw",
    _TEXT: "_step_text",
    _OPEN: "_step_open",
    _HEADER: "_step_header",
    _ARGS: "_step_args",
    _CLOSE: "_step_close",
    _AFTER: "_step_after",
}


def _compile(pattern: str | None):
    return regex.compile(pattern, regex.DOTALL) if pattern is not None else None


def extractor_for(syntax: CallSyntax, tools: list[Tool]) -> MarkedCallExtractor:
    """The extractor for `tools`: function calls by their header, custom ones by theirs."""
    return MarkedCallExtractor(
        syntax,
        {t.name for t in tools if not t.custom},
        frozenset(t.name for t in tools if t.custom),
    )


class MarkedCallExtractor(TrimmedContent, StreamingExtractor):
    def __init__(
        self, syntax: CallSyntax, tool_names: set[str], custom_names: frozenset[str] = frozenset()
    ):
        self.syntax = syntax
        self.custom_header = _compile(syntax.custom_header) if custom_names else None
        self.custom_names = custom_names
        self.markers = syntax.markers
        self.marker = ""  # the marker that opened the current block
        self.header = _compile(syntax.header)
        self.close = _compile(syntax.close)
        self.opener = _compile(syntax.opener)
        self.separator = _compile(syntax.separator)
        self.terminator = _compile(syntax.terminator)
        self.tool_names = tool_names
        self.state = _TEXT
        self.buf = ""  # text not yet consumed in the current state
        self.raw = ""  # text consumed since the marker, given back as content if no call forms
        self.calls = 0
        self.scanner: JsonValueScanner | None = None
        self.pending: str | None = None  # name of a call not yet announced
        self.calls_in_block = 0  # calls made since the current marker

    @property
    def call_count(self) -> int:
        return self.calls

    def feed(self, text: str) -> Delta:
        out = Delta()
        self.buf += text
        while self.buf and getattr(self, _STEPS[self.state])(out):
            pass
        return out

    def finish(self) -> Delta:
        out = Delta()
        if self.state == _TEXT:
            self._content(out, self.buf, final=True)
        elif self.state in (_OPEN, _HEADER) or (self.state == _ARGS and self.pending):
            if self.calls_in_block == 0:
                self._content(out, self.raw + self.buf, final=True)
        elif self.state in (_CLOSE, _AFTER):
            if self.state == _CLOSE and self._closes(self.buf):
                self.calls += 1  # the output ended right after the call (mistral has no close)
            rest = self.buf
            if rest.strip() and not self._partial_of_end(rest):
                self._content(out, rest, final=True)
        elif self.state == _RAW:  # a custom call that the output's end ends (or max tokens)
            if self.buf:
                self._args(out, self.buf)
            self.calls += 1
        # _ARGS with an announced call: cut by max tokens; what streamed stays, as OpenAI does.
        self.buf = ""
        return out

    # -- states --------------------------------------------------------------------------
    def _step_text(self, out: Delta) -> bool:
        found = [(i, m) for m in self.markers if (i := self.buf.find(m)) >= 0]
        if found:
            at, self.marker = min(found)
            self._content(out, self.buf[:at])
            self.raw = ""
            self.buf = self.buf[at:]
            self.calls_in_block = 0
            self.state = _OPEN if self.opener is not None else _HEADER
            return True
        keep = max(partial_suffix(self.buf, m) for m in self.markers)
        self._content(out, self.buf[: len(self.buf) - keep])
        self.buf = self.buf[len(self.buf) - keep :]
        return False

    def _step_open(self, out: Delta) -> bool:
        m = self.opener.match(self.buf, partial=True)
        if m is None:
            return self._not_a_call(out)
        if m.partial:
            return False
        self._consume(m.end())
        self.state = _HEADER
        return True

    def _step_header(self, out: Delta) -> bool:
        if self.custom_header is not None:
            c = self.custom_header.match(self.buf, partial=True)
            if c is not None and not c.partial and c.group("name") in self.custom_names:
                self._announce(out, c.group("name"), custom=True)
                self._consume(c.end())
                self.state = _RAW
                return True
            if c is not None and c.partial:
                m = self.header.match(self.buf, partial=True)
                if m is None or m.partial:
                    return False  # either may still form
        m = self.header.match(self.buf, partial=True)
        if m is None or (not m.partial and m.group("name") not in self.tool_names):
            return self._not_a_call(out)
        if m.partial:
            return False
        # Announced only once its arguments open, so a malformed call stays content; where the
        # constraint forces calls, at once: under jump-forward the forced header is the whole
        # first output, and its name was the first delta only after a forward pass.
        if self.calls_enforced:
            self._announce(out, m.group("name"))
        else:
            self.pending = m.group("name")
        self._consume(m.end())
        self.scanner = JsonValueScanner()
        self.state = _ARGS
        return True

    def _announce(self, out: Delta, name: str, custom: bool = False) -> None:
        """The current call's first delta: its index, a new id and its name."""
        out.calls.append(CallDelta(index=self.calls, id=new_call_id(), name=name, custom=custom))

    def _step_args(self, out: Delta) -> bool:
        scanner = self.scanner
        assert scanner is not None, "_step_header sets the scanner as it enters _ARGS"
        used, text = scanner.feed(self.buf)
        if scanner.failed:
            return self._not_a_call(out)
        if self.pending and scanner.started:
            self._announce(out, self.pending)
            self.pending = None
        if text:
            self._args(out, text)
        self._consume(used)
        if scanner.done:
            self.state = _CLOSE
            return True
        return False

    def _step_raw(self, out: Delta) -> bool:
        """A custom call's raw input, streamed as it arrives, up to its end."""
        end = self.syntax.custom_end
        # _RAW is entered through custom_header only, and a syntax with one has its end.
        assert end is not None, "a syntax with custom_header sets custom_end"
        at = self.buf.find(end)
        if at < 0:
            keep = partial_suffix(self.buf, end)
            if len(self.buf) > keep:
                self._args(out, self.buf[: len(self.buf) - keep])
                self._consume(len(self.buf) - keep)
            return False
        if at:
            self._args(out, self.buf[:at])
        self._consume(at if self.syntax.custom_end_is_next_call else at + len(end))
        self.calls += 1
        self.calls_in_block += 1
        self.state = _AFTER if self.separator is not None else _TEXT
        return True

    def _step_close(self, out: Delta) -> bool:
        m = self.close.match(self.buf, partial=True)
        if m is not None and m.partial:
            return False
        if m is not None:
            self._consume(m.end())
        self.calls += 1
        self.calls_in_block += 1
        self.scanner = None
        self.state = _AFTER if self.separator is not None else _TEXT
        return True

    def _step_after(self, out: Delta) -> bool:
        """Inside a marked list, after a call: the list's end, or a separator and a call."""
        if self.terminator is not None:
            m = self.terminator.match(self.buf, partial=True)
            if m is not None:
                if m.partial:
                    return False
                self._consume(m.end())
                self.state = _TEXT
                return True
        m = self.separator.match(self.buf, partial=True)
        if m is not None:
            if m.partial or m.end() == len(self.buf):
                return False  # wait to see what follows the separator
            h = self.header.match(self.buf, m.end(), partial=True)
            if h is None and self.custom_header is not None:
                h = self.custom_header.match(self.buf, m.end(), partial=True)
            if h is not None:
                self._consume(m.end())
                self.state = _HEADER
                return True
        self.state = _TEXT  # the list ended without its terminator: the rest is content
        return True

    # -- helpers -------------------------------------------------------------------------
    def _consume(self, n: int) -> None:
        self.raw += self.buf[:n]
        self.buf = self.buf[n:]

    def _not_a_call(self, out: Delta) -> bool:
        """What followed the marker is not a call: give back what was held as content."""
        if self.calls_in_block:
            self.state = _TEXT  # calls already made stay; the rest is content
            return True
        self.buf = (self.raw + self.buf)[len(self.marker) :]
        self._content(out, self.marker)
        self.scanner = None
        self.pending = None
        self.state = _TEXT
        return True

    def _closes(self, rest: str) -> bool:
        m = self.close.match(rest)
        return m is not None and not rest[m.end() :].strip()

    def _partial_of_end(self, rest: str) -> bool:
        for pattern in (self.close, self.terminator, self.separator):
            if pattern is not None:
                m = pattern.match(rest, partial=True)
                if m is not None and (m.partial or m.end() == len(rest)):
                    return True
        return False
