"""The EBNF dialect's rewrite: xgrammar 0.2.8's printing of a grammar, as xgrammar 0.1.25 reads
it with the same meaning (dialects.py says why the dialect exists).

What 0.1.25 would misread is rewritten: `x{n, -1}` repetition, and TagDispatch (free text with
triggers and excluded strings), whose `excludes` 0.1.25 ignores without a word. A TagDispatch
becomes plain rules: one per state of the Aho-Corasick automaton over its triggers and excluded
strings (`_dispatch_rules`). Anything else 0.1.25 would read differently is a DialectError.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from toolwire.constraints.dialects import DialectError

# -- xgrammar 0.2 grammar text -> xgrammar 0.1.25 grammar text --------------------------------
_DISPATCH = re.compile(r"^(\w+) ::= TagDispatch\(\n(.*?)\n\)$", re.M | re.S)
_PAIR = re.compile(r'\(("(?:[^"\\]|\\.)*"), (\w+)\)')
_LOOP = re.compile(r"loop_after_dispatch=(true|false)")
_EXCLUDES = re.compile(r"excludes=\(((?:\"(?:[^\"\\]|\\.)*\"(?:, )?)*)\)")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_REPEAT = re.compile(r"\{(\d+), -1\}")
ANY_CHARACTER = "\\0-\\U0010ffff"  # plain any_text


def to_ebnf_0125(grammar_text: str) -> str:
    """xgrammar 0.2.8's printing of a grammar, as xgrammar 0.1.25 reads it with the same
    meaning; DialectError for anything left that 0.1.25 would read differently."""
    text = _DISPATCH.sub(lambda m: _dispatch_rules(m.group(1), m.group(2)), grammar_text)
    text = _REPEAT.sub(lambda m: {"0": "*", "1": "+"}.get(m.group(1), f"{{{m.group(1)},}}"), text)
    if "TagDispatch" in text or re.search(r"\{\d+, ?-\d+\}", text):
        raise DialectError("the grammar holds a construct xgrammar 0.1.25 does not read alike")
    wide = _wide_class(text)
    if wide:
        raise DialectError(
            f"a schema pattern's character class {wide} holds non-ASCII "
            "characters, which xgrammar 0.1.25 mis-reads",
            schema=True,
        )
    return text


def _wide_class(text: str) -> str | None:
    """The first character class holding a non-ASCII character (raw or escaped), outside
    string literals: 0.1.25 drops them from negated classes and mis-reads ranges of them."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':  # a string literal: non-ASCII is fine there
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "[":
            j = i + 1
            while j < n and text[j] != "]":
                j += 2 if text[j] == "\\" else 1
            body = text[i + 1 : j]
            if body == ANY_CHARACTER:  # every character: read alike by both versions
                i = j + 1
                continue
            escaped = [int(h, 16) for h in re.findall(r"\\[xuU]\{?([0-9A-Fa-f]+)", body)]
            if any(ord(ch) > 0x7F for ch in body) or any(v > 0x7F for v in escaped):
                return text[i : j + 1]
            i = j
        i += 1
    return None


@dataclass
class _Dispatch:
    triggers: list[tuple[str, str]]  # (trigger text, rule matching what follows it)
    loop: bool  # after a dispatched rule, free text again
    excludes: list[str]  # may not appear in the free text


def _parse_dispatch(body: str) -> _Dispatch:
    loop = _LOOP.search(body)
    excludes = _EXCLUDES.search(body)
    rest = _EXCLUDES.sub("", _LOOP.sub("", _PAIR.sub("", body)))
    if loop is None or rest.strip(" ,\n"):
        raise DialectError(f"unknown TagDispatch arguments: {rest.strip()!r}")
    return _Dispatch(
        [(_unquote(s), rule) for s, rule in _PAIR.findall(body)],
        loop.group(1) == "true",
        [_unquote(f'"{s}"') for s in _STRING.findall(excludes.group(1))] if excludes else [],
    )


# What a character does in a TagDispatch state (see _dispatch_rules).
_Action = tuple[Literal["go"], int] | tuple[Literal["call"], str] | tuple[Literal["ban"]]


def _dispatch_rules(name: str, body: str) -> str:
    """TagDispatch as rules: free text that never holds an excluded string; a trigger in it
    goes on with the trigger's rule (then free text again if it loops, else the end). Text may
    end in any state, like TagDispatch before whatever follows it."""
    d = _parse_dispatch(body)
    ends: dict[str, str | None] = {t: rule for t, rule in d.triggers}
    for e in d.excludes:
        ends.setdefault(e, None)  # None: completing it is refused
    alphabet = sorted({c for s in ends for c in s})
    wide = [w for w in ends if any(ord(c) > 0x7F for c in w)]
    if wide:
        # xgrammar 0.1.25 mis-reads character classes holding non-ASCII characters (a negated
        # class lets them all through), so such a string cannot be told apart from other text.
        raise DialectError(
            f"free text must not hold {wide[0]!r}, which xgrammar 0.1.25 "
            "cannot enforce (it mis-reads non-ASCII character classes)"
        )
    states, goto = _automaton(list(ends))
    # What each character does in each state: ("go", state), ("call", rule) or ("ban",).
    table: list[dict[str, _Action]] = []
    for q, prefix in enumerate(states):
        row: dict[str, _Action] = {}
        for c in alphabet:
            done = _completed(prefix + c, ends)
            if done is None:
                row[c] = ("go", goto[q][c])
            elif (rule := ends[done]) is not None:
                row[c] = ("call", rule)
            else:
                row[c] = ("ban",)
        table.append(row)
    cls = _minimize(table, alphabet)
    rules = [f"{name} ::= ({_state(name, 0)})"]
    for k in sorted(set(cls)):
        row = table[cls.index(k)]
        alts, stay = ['""'], []
        to: dict[int, list[str]] = {}
        for c in alphabet:
            act = row[c]
            if act[0] == "go":
                to.setdefault(cls[act[1]], []).append(c)
            elif act[0] == "call":  # a trigger: its rule, then free text again or the end
                alts.append(f"{_literal(c)} {act[1]}" + (f" {_state(name, 0)}" if d.loop else ""))
        home = cls[0]  # characters outside the alphabet lead back to the start
        for target, chars in sorted(to.items(), key=lambda t: t[0] != home):
            klass = _char_class(chars, negate=target == home, exclude=alphabet)
            if k == home and target == home:
                stay = [f"{klass}*"]  # plain text loops in one rule: cheaper to compile
            elif klass:
                alts.append(f"{klass} {_state(name, target)}")
        if home not in to:
            klass = _char_class([], negate=True, exclude=alphabet)
            stay, alts = (
                ([f"{klass}*"], alts)
                if k == home
                else (stay, alts + [f"{klass} {_state(name, home)}"])
            )
        rules.append(f"{_state(name, k)} ::= ({' '.join(stay + ['(' + ' | '.join(alts) + ')'])})")
    return "\n".join(rules)


def _minimize(table: list[dict], alphabet: list[str]) -> list[int]:
    """Each state's class in the smallest equivalent automaton (Moore's refinement): fewer
    rules, and each rule costs xgrammar a pass over the vocabulary when it compiles."""
    cls = [0] * len(table)
    while True:
        sig = [
            tuple((a[0], cls[a[1]]) if a[0] == "go" else a for a in (row[c] for c in alphabet))
            + (cls[q],)
            for q, row in enumerate(table)
        ]
        ids: dict[tuple, int] = {}
        new = [ids.setdefault(s, len(ids)) for s in sig]
        if len(ids) == len(set(cls)):
            return new
        cls = new


def _state(name: str, q: int) -> str:
    return f"{name}_text_{q}"


def _automaton(words: list[str]) -> tuple[list[str], list[dict[str, int]]]:
    """States: the proper prefixes of the words (the text seen since it last could start one);
    goto[q][c]: the state after reading c in state q (the longest suffix that is a prefix)."""
    # A prefix that holds a whole word is never reached: the word ended the text before it.
    prefixes = sorted(
        {w[:i] for w in words for i in range(len(w)) if not any(v in w[:i] for v in words)},
        key=lambda p: (len(p), p),
    )
    index = {p: i for i, p in enumerate(prefixes)}
    alphabet = {c for w in words for c in w}
    goto = []
    for p in prefixes:
        row = {}
        for c in alphabet:
            s = p + c
            while s and s not in index:
                s = s[1:]
            row[c] = index[s] if s else 0
        goto.append(row)
    return prefixes, goto


def _completed(text: str, ends: dict[str, str | None]) -> str | None:
    """The word `text` ends with, excluded strings first (a shorter one inside a trigger
    still refuses it)."""
    hits = [w for w in ends if text.endswith(w)]
    if not hits:
        return None
    return min(hits, key=lambda w: (ends[w] is not None, len(w)))


def _unquote(literal: str) -> str:
    """An EBNF string literal as printed by xgrammar (JSON-like escapes)."""
    body = literal[1:-1]
    body = re.sub(r"\\x([0-9A-Fa-f]{2})", lambda m: "\\u00" + m.group(1), body)
    return json.loads(f'"{body}"')


def _escape(c: str, in_class: bool) -> str:
    special = '\\"' if not in_class else "\\]^-["
    if c in special:
        return "\\" + c
    if c == "\n":
        return "\\n"
    if c == "\r":
        return "\\r"
    if c == "\t":
        return "\\t"
    if ord(c) < 0x20:
        return f"\\x{ord(c):02x}"
    return c


def _literal(c: str) -> str:
    return '"' + _escape(c, False) + '"'


def _char_class(chars: list[str], negate: bool, exclude: list[str]) -> str:
    """[chars], or for the root target [^ alphabet-not-listed ] (every other character)."""
    if negate:
        banned = [c for c in exclude if c not in chars]
        return "[^" + "".join(_escape(c, True) for c in banned) + "]"
    if not chars:
        return ""
    return "[" + "".join(_escape(c, True) for c in chars) + "]"
