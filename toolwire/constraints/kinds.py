"""The kinds of decoding constraint, and one constraint as toolwire's code passes it around.

A kind is named as in the proto's `Constraint.kind` oneof (protos/toolwire/common/v1/
common.proto), so a Constraint goes to and from the wire by that name and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from toolwire.grpc_gen.common.v1 import common_pb2 as common


class Kind(StrEnum):
    JSON_SCHEMA = "json_schema"
    STRUCTURAL_TAG = "structural_tag"  # an xgrammar structural tag, as JSON
    EBNF = "ebnf"  # a grammar (the EBNF dialect: dialects.py)
    REGEX = "regex"


@dataclass(frozen=True)
class Constraint:
    """One constraint: hashable, so compiled grammars are cached by it."""

    kind: Kind
    text: str

    @classmethod
    def from_proto(cls, c: common.Constraint) -> Constraint | None:
        """The wire's constraint; None when the request is unconstrained."""
        which = c.WhichOneof("kind")
        return cls(Kind(which), getattr(c, which)) if which else None

    def to_proto(self) -> common.Constraint:
        return common.Constraint(**{self.kind.value: self.text})
