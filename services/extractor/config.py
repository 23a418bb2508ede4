"""The extractor service's settings, built once from its command line
(`toolwire serve extractor`).

The listening address (--host, --port, --metrics-port) and the TLS flags
(ServerSecurity.from_args) are the server's, read from the command line as decode's are."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from toolwire.runtime import model_source


@dataclass(frozen=True)
class ExtractorConfig:
    model: str = model_source.EMBEDDED
    tool_format: str | None = None  # None: detected from the model's chat template

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExtractorConfig:
        """The settings the command line gave; a flag it does not define keeps its default."""
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    def but(self, **changes) -> ExtractorConfig:
        return replace(self, **changes)


DEFAULTS = ExtractorConfig()
