"""The decode service's settings, built once from its command line (`toolwire serve decode`).

Each default is written here and nowhere else: the command line (toolwire/stack/cli.py)
takes its defaults from `DEFAULTS`, and code that starts an engine without a command line
(benches, tests) builds a `DecodeConfig` with only what it changes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace

from toolwire.runtime import model_source


@dataclass(frozen=True)
class DecodeConfig:
    model: str = model_source.EMBEDDED
    max_model_len: int | None = None  # None: the model's own context
    engine: str = "batch"  # batch | trtllm ("torch" is read as batch)
    dtype: str = "auto"  # auto | bf16 | fp32 | fp16 | int8
    device: str = "cpu"
    step: str = "auto"  # auto | ggml | torch (the batch engine's forward step)
    kv_tokens: int = 8192  # the ggml step's KV cells, shared by all sequences
    kv_type: str | None = None  # the ggml step's KV type; None: q8_0
    threads: int | None = None  # None: every CPU this process may use, within its quota
    thread_policy: str = "adaptive"  # adaptive | fixed (services/decode/step_threads.py)
    max_batch: int = 32
    tensor_parallel_size: int = 1  # trtllm
    kv_cache_fraction: float = 0.85  # trtllm
    max_queue: int = 256
    queue_timeout: float = 120.0
    prefix_cache_mb: int = 1024
    no_prefix_reuse: bool = False
    no_jump_forward: bool = False
    speculation: str = "auto"  # auto | ngram | off (services/decode/drafts.py)
    null_step_ms: float = 0.0  # --model null: one step's time

    def __post_init__(self) -> None:
        if self.engine == "torch":  # the batch engine's name before its steps were split out
            object.__setattr__(self, "engine", "batch")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DecodeConfig:
        """The settings the command line gave; a flag it does not define keeps its default."""
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    def but(self, **changes) -> DecodeConfig:
        return replace(self, **changes)


DEFAULTS = DecodeConfig()
