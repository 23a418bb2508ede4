"""What a compile in the template's pool answers (compiler.check_in_dialect), apart from the
compiler: the pool's own process imports this without loading xgrammar."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from toolwire.constraints.kinds import Constraint


class Outcome(Enum):
    OK = "ok"  # compiled: `constraint` is it in the dialect asked for
    INVALID = "invalid"  # xgrammar refuses it (or crashed on it): the request's fault
    DIALECT = "dialect"  # the dialect cannot state the tool format's free text
    DIALECT_SCHEMA = "dialect-schema"  # the dialect cannot state a pattern in a schema
    TIMEOUT = "timeout"  # not compiled within the deadline
    UNAVAILABLE = "unavailable"  # no worker would start to compile it: the server's fault


@dataclass(frozen=True)
class CompileResult:
    outcome: Outcome
    constraint: Constraint | None = None  # OK only
    message: str = ""  # why not, for the others
