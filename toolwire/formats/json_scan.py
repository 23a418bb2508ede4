"""Incremental scanning of one JSON value in a character stream.

The extractor streams tool-call arguments as they are generated; it needs to know, one piece at
a time, where the arguments' JSON value ends, without waiting for the whole call.
"""

from __future__ import annotations


class JsonValueScanner:
    """Feed text; learns where a single JSON object or array ends, and gives the value's text in
    one canonical layout (json.dumps's: ", " and ": " separators, no other whitespace outside
    strings), so arguments read the same however the model spaced them, "{}" included."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.started = False
        self.done = False
        self.failed = False

    def feed(self, text: str) -> tuple[int, str]:
        """Consume text; return (characters that belong to the value, their canonical text)."""
        out: list[str] = []
        for i, ch in enumerate(text):
            if self.done or self.failed:
                return i, "".join(out)
            if self.in_string:
                out.append(ch)
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                continue
            if ch in " \t\r\n":
                continue
            if not self.started:
                if ch not in "{[":
                    self.failed = True
                    return i, ""
                self.started = True
                self.depth = 1
                out.append(ch)
                continue
            out.append(ch + " " if ch in ",:" else ch)
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    return i + 1, "".join(out)
        return len(text), "".join(out)


def scan_json_string(text: str, start: int) -> tuple[str, int] | None:
    """Read a JSON string literal at text[start] == '"'; return (raw body, end) or None if cut."""
    i = start + 1
    escape = False
    while i < len(text):
        ch = text[i]
        if escape:
            escape = False
        elif ch == "\\":
            escape = True
        elif ch == '"':
            return text[start + 1 : i], i + 1
        i += 1
    return None
