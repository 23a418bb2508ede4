"""The template service's settings, built once from its command line (`toolwire serve template`).

Each default is written here and nowhere else: the command line (toolwire/stack/cli.py) takes
its defaults from `DEFAULTS`. The listening address (--host, --port, --metrics-port) and the
TLS flags (ServerSecurity.from_args) are the server's, read from the command line as decode's
are."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from toolwire.runtime import model_source


@dataclass(frozen=True)
class TemplateConfig:
    model: str = model_source.EMBEDDED
    tool_format: str | None = None  # None: detected from the model's chat template
    max_model_len: int | None = None  # None: the model's own context
    grammar_timeout: float = 10.0  # seconds a constraint may take to compile before a 400
    grammar_workers: int = 2  # the most processes compiling constraints at once (one always)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TemplateConfig:
        """The settings the command line gave; a flag it does not define keeps its default."""
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    def but(self, **changes) -> TemplateConfig:
        return replace(self, **changes)


DEFAULTS = TemplateConfig()
