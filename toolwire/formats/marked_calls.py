"""A streaming extractor for formats whose calls are `MARKER header ARGS close`.

Text outside calls is content. A call's header (which names the tool) is held until complete;
then its argument JSON streams out as it arrives; the close is checked and dropped. Anything that
turns out not to be a well-formed call of a known tool goes back out as content, never dropped.
"""

from __future__ import annotations

import regex

from .base import CallDelta, Delta, StreamingExtractor, new_call_id
from .json_scan import JsonValueScanner

_TEXT, _HEADER, _ARGS, _CLOSE = range(4)


class MarkedCallExtractor(StreamingExtractor):
    def __init__(self, marker: str, header: str, close: str, tool_names: set[str]):
        """header: regex (after the marker) with a `name` group, ending where arguments begin.
        close: regex of what follows the arguments up to the end of the call."""
        self.marker = marker
        self.header = regex.compile(header, regex.DOTALL)
        self.close = regex.compile(close, regex.DOTALL)
        self.tool_names = tool_names
        self.state = _TEXT
        self.buf = ""  # text not yet emitted in the current state
        self.pending_ws = ""  # content whitespace held until more content follows
        self.content_started = False
        self.calls = 0
        self.scanner: JsonValueScanner | None = None
        self.pending: tuple[str, str] | None = None  # (name, header text) of an unannounced call

    @property
    def call_count(self) -> int:
        return self.calls

    def feed(self, text: str) -> Delta:
        out = Delta()
        self.buf += text
        progressed = True
        while progressed and self.buf:
            progressed = getattr(self, _STEPS[self.state])(out)
        return out

    def finish(self) -> Delta:
        out = Delta()
        if self.state == _TEXT:
            self._content(out, self.buf, final=True)
        elif self.state == _HEADER:
            self._content(out, self.marker + self.buf, final=True)
        elif self.state == _ARGS and self.pending:
            self._content(out, self.marker + self.pending[1] + self.buf, final=True)
        elif self.state == _CLOSE and not self.close.match(self.buf, partial=True):
            self._content(out, self.buf, final=True)
        # _ARGS: the call was cut (max tokens); what streamed stays, as OpenAI does.
        self.buf = ""
        return out

    # -- states --------------------------------------------------------------------------
    def _step_text(self, out: Delta) -> bool:
        at = self.buf.find(self.marker)
        if at >= 0:
            self._content(out, self.buf[:at])
            self.buf = self.buf[at + len(self.marker):]
            self.state = _HEADER
            return True
        keep = _partial_suffix(self.buf, self.marker)
        self._content(out, self.buf[:len(self.buf) - keep])
        self.buf = self.buf[len(self.buf) - keep:]
        return False

    def _step_header(self, out: Delta) -> bool:
        m = self.header.match(self.buf, partial=True)
        if m is None or (not m.partial and m.group("name") not in self.tool_names):
            # Not a call after all: the marker and what followed are content.
            self._content(out, self.marker)
            self.state = _TEXT
            return True
        if m.partial:
            return False
        # The call is announced only once its arguments open, so a malformed one stays content.
        self.pending = (m.group("name"), self.buf[:m.end()])
        self.buf = self.buf[m.end():]
        self.scanner = JsonValueScanner()
        self.state = _ARGS
        return True

    def _step_args(self, out: Delta) -> bool:
        if not self.scanner.started:
            # Whitespace before the arguments is not part of them (the header may match early).
            stripped = self.buf.lstrip()
            self.pending = (self.pending[0], self.pending[1] + self.buf[:len(self.buf) - len(stripped)])
            self.buf = stripped
            if not self.buf:
                return False
        used, text = self.scanner.feed(self.buf)
        if self.scanner.failed:
            # Arguments that are not a JSON object or array: not a call; all of it is content.
            self._content(out, self.marker + self.pending[1])
            self.pending = None
            self.scanner = None
            self.state = _TEXT
            return True
        if self.pending and self.scanner.started:
            out.calls.append(CallDelta(index=self.calls, id=new_call_id(), name=self.pending[0]))
            self.pending = None
        if text:
            self._args(out, text)
        self.buf = self.buf[used:]
        if self.scanner.done:
            self.state = _CLOSE
            return True
        return False

    def _step_close(self, out: Delta) -> bool:
        m = self.close.match(self.buf, partial=True)
        if m is not None and m.partial:
            return False
        if m is not None:
            self.buf = self.buf[m.end():]
        self.calls += 1
        self.scanner = None
        self.state = _TEXT
        return True

    # -- output --------------------------------------------------------------------------
    def _args(self, out: Delta, text: str) -> None:
        index = self.calls
        if out.calls and out.calls[-1].index == index:
            out.calls[-1].arguments += text
        else:
            out.calls.append(CallDelta(index=index, arguments=text))

    def _content(self, out: Delta, text: str, final: bool = False) -> None:
        """Emit content, dropping leading whitespace and holding back trailing whitespace."""
        text = self.pending_ws + text
        self.pending_ws = ""
        if not self.content_started:
            text = text.lstrip()
        stripped = text.rstrip()
        if not final:
            self.pending_ws = text[len(stripped):]
        if stripped:
            out.content += stripped
            self.content_started = True


_STEPS = {_TEXT: "_step_text", _HEADER: "_step_header", _ARGS: "_step_args", _CLOSE: "_step_close"}


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of marker."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0
