"""Stop strings on streamed content: cut at the first match, holding back possible starts."""

from __future__ import annotations

from toolwire.formats.base import partial_suffix


class StopStrings:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """Content safe to emit now; sets `hit` when a stop string appeared."""
        if not self.stops or self.hit:
            return "" if self.hit else text
        text = self.held + text
        found = [(i, s) for s in self.stops if (i := text.find(s)) >= 0]
        if found:
            self.hit = True
            self.held = ""
            return text[: min(found)[0]]
        keep = max(partial_suffix(text, s) for s in self.stops)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out
