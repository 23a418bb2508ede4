"""Compiling decoding constraints with xgrammar: toolwire's one reading of each kind
(`grammar_of`), the template's check (`check_in_dialect`, run in the compile pool's workers:
pool.py) and the torch engine's compiler with its cache (`ConstraintCompiler`)."""

from __future__ import annotations

import functools
from typing import Any

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.dialects import DialectError
from toolwire.constraints.ebnf import to_ebnf_0125
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.constraints.outcome import CompileResult, Outcome
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.vocabulary import Dialect

# How toolwire compiles a JSON schema, on every engine: non-strict (extra properties where the
# schema allows them) and one whitespace at most between tokens (compact arguments).
JSON_SCHEMA_OPTIONS: dict[str, Any] = dict(
    strict_mode=False, any_whitespace=True, max_whitespace_cnt=1
)


class ConstraintCompiler:
    """The torch engine's compiler: xgrammar, cached by constraint, so a repeated tool set
    compiles once."""

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        stop_token_ids: list[int],
        cache_size: int = 256,
        info: xgr.TokenizerInfo | None = None,
    ):
        self.info = info or xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)
        self.compiles = 0
        self.compile = functools.lru_cache(maxsize=cache_size)(self._compile)

    def _compile(self, constraint: Constraint) -> xgr.CompiledGrammar:
        self.compiles += 1
        return self.compiler.compile_grammar(grammar_of(constraint))

    def compile_constraint(self, c: common.Constraint) -> xgr.CompiledGrammar | None:
        constraint = Constraint.from_proto(c)
        return self.compile(constraint) if constraint else None


def grammar_of(c: Constraint) -> xgr.Grammar:
    """toolwire's one reading of each constraint kind: the template's check, the torch engine
    and the EBNF dialect all start from it."""
    if c.kind is Kind.JSON_SCHEMA:
        return xgr.Grammar.from_json_schema(c.text, **JSON_SCHEMA_OPTIONS)
    if c.kind is Kind.STRUCTURAL_TAG:
        return xgr.Grammar.from_structural_tag(c.text)
    if c.kind is Kind.EBNF:
        return xgr.Grammar.from_ebnf(c.text)
    if c.kind is Kind.REGEX:
        return xgr.Grammar.from_regex(c.text)
    raise ValueError(f"unknown constraint kind {c.kind!r}")


def in_dialect(c: Constraint, dialect: str, grammar: xgr.Grammar | None = None) -> Constraint:
    """The constraint as an engine of `dialect` takes it; raises DialectError where the dialect
    cannot state it, xgrammar's error where the constraint is invalid.
    `grammar`: grammar_of(c), where the caller has already built it."""
    if dialect == Dialect.STRUCTURAL_TAG:
        return c
    if dialect != Dialect.EBNF:
        raise ValueError(f"unknown constraint dialect {dialect!r}")
    return Constraint(Kind.EBNF, to_ebnf_0125(str(grammar or grammar_of(c))))


def check_in_dialect(compiler: xgr.GrammarCompiler, c: Constraint, dialect: str) -> CompileResult:
    """Compile the constraint (so that what xgrammar refuses is refused before any token is
    generated) and write it in the engine's dialect."""
    try:
        grammar = grammar_of(c)
        compiler.compile_grammar(grammar)
        return CompileResult(Outcome.OK, in_dialect(c, dialect, grammar))
    except DialectError as e:
        return CompileResult(
            Outcome.DIALECT_SCHEMA if e.schema else Outcome.DIALECT, message=str(e)
        )
    except Exception as e:  # xgrammar refuses the schema: the request's fault
        return CompileResult(Outcome.INVALID, message=str(e) or type(e).__name__)
