"""Constraint dialects: the form of decoding constraint each decode engine accepts.

The decode service reports its engine's dialect in GetModelInfo; the gateway passes it to the
template service, which builds every constraint in it:

- STRUCTURAL_TAG (`xgrammar-structural-tag-0.2`): xgrammar 0.2 structural tags and JSON schemas,
  compiled by toolwire's own code (the torch engine).
- EBNF (`xgrammar-ebnf-0.1.25`): one EBNF grammar per request, in the syntax xgrammar 0.1.25
  parses, built by the template's xgrammar 0.2 from the structural tag or schema with toolwire's
  options (ebnf.py). TensorRT-LLM 1.2 pins xgrammar 0.1.25, whose structural tags lack
  `optional`, `star`, `any_text.excludes`, an empty `const_string` or `separator`, and would
  compile a JSON schema with its own whitespace rules; as a grammar the request is enforced
  exactly as the torch engine enforces it. Every engine accepts it, so it is the common dialect
  of a mixed pool.

A dialect's name travels on the wire (ModelInfo.constraint_dialect,
RenderChatRequest.constraint_dialect) as its string: the members of toolwire.vocabulary's
Dialect (a StrEnum), which compare equal to the strings a proto carries.
"""

from __future__ import annotations

import re

from toolwire.vocabulary import Dialect

# The members under the module's names, which the decode and template services import.
STRUCTURAL_TAG = Dialect.STRUCTURAL_TAG
EBNF = Dialect.EBNF
DIALECTS: tuple[Dialect, ...] = (Dialect.STRUCTURAL_TAG, Dialect.EBNF)  # most capable first


def engine_dialect(xgrammar_version: str) -> Dialect:
    """The dialect of an engine that compiles constraints with this xgrammar version itself."""
    major, minor = (int(p) for p in re.findall(r"\d+", xgrammar_version)[:2])
    return Dialect.STRUCTURAL_TAG if (major, minor) >= (0, 2) else Dialect.EBNF


def accepts(engine: str, constraint: str) -> bool:
    """Whether an engine of dialect `engine` takes constraints built in `constraint`."""
    return engine == constraint or constraint == Dialect.EBNF


def common_dialect(dialects: list[str]) -> Dialect:
    """The dialect every engine of a pool accepts: EBNF as soon as one engine needs it."""
    known = [Dialect(d) for d in dialects if d in DIALECTS]
    return max(known, key=DIALECTS.index) if known else Dialect.STRUCTURAL_TAG


class DialectError(ValueError):
    """A constraint holds something the dialect cannot state: refused, never loosened.
    `schema`: the cause is in a JSON schema (a pattern), not in the tool format's free text."""

    def __init__(self, message: str, schema: bool = False):
        super().__init__(message)
        self.schema = schema
