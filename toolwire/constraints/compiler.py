"""Compiling decoding constraints with xgrammar, shared by the template service (to refuse a bad
schema before any token is generated) and the torch engine (to decode with it)."""

from __future__ import annotations

import functools
from typing import Any

import xgrammar as xgr

from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.constraints.ebnf import EBNF, STRUCTURAL_TAG, to_ebnf_0125

# How toolwire compiles a JSON schema, on every engine: non-strict (extra properties where the
# schema allows them) and one whitespace at most between tokens (compact arguments).
JSON_SCHEMA_OPTIONS = dict(strict_mode=False, any_whitespace=True, max_whitespace_cnt=1)


class ConstraintCompiler:
    """Compiles constraints with xgrammar, caching by their text: a repeated tool set compiles
    once. Used by the template service to refuse bad schemas and by the torch engine to decode."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int],
                 cache_size: int = 256, info: xgr.TokenizerInfo | None = None):
        self.info = info or xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        self.compiles = 0
        self.compile = functools.lru_cache(maxsize=cache_size)(self._compile)

    def _compile(self, kind: str, text: str) -> xgr.CompiledGrammar:
        self.compiles += 1
        return self.compiler.compile_grammar(grammar_of(kind, text))

    def compile_constraint(self, c: common.Constraint) -> xgr.CompiledGrammar | None:
        kind = c.WhichOneof("kind")
        return self.compile(kind, getattr(c, kind)) if kind else None


def grammar_of(kind: str, text: str) -> xgr.Grammar:
    """toolwire's one reading of each constraint kind: the template's check, the torch engine
    and the EBNF dialect all start from it."""
    if kind == "json_schema":
        return xgr.Grammar.from_json_schema(text, **JSON_SCHEMA_OPTIONS)
    if kind == "structural_tag":
        return xgr.Grammar.from_structural_tag(text)
    if kind == "ebnf":
        return xgr.Grammar.from_ebnf(text)
    if kind == "regex":
        return xgr.Grammar.from_regex(text)
    raise ValueError(f"unknown constraint kind {kind!r}")


def in_dialect(kind: str, text: str, dialect: str,
               grammar: xgr.Grammar | None = None) -> tuple[str, str]:
    """The constraint as an engine of `dialect` takes it (kind, text); raises DialectError
    where the dialect cannot state it, xgrammar's error where the constraint is invalid.
    `grammar`: grammar_of(kind, text), where the caller has already built it."""
    if dialect == STRUCTURAL_TAG:
        return kind, text
    if dialect != EBNF:
        raise ValueError(f"unknown constraint dialect {dialect!r}")
    return "ebnf", to_ebnf_0125(str(grammar or grammar_of(kind, text)))
