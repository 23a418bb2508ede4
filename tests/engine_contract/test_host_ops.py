"""What the engine runs on the host beside the step: torch's thread count and greedy sampling.

Beside the ggml step nothing runs torch (its logits are sampled in numpy, and its process
keeps torch out): torch's OpenMP pool, which woke a thread every step that then took a core
from the step's threads (docs/performance.md, The decode step), is left alone. The torch
step's forward needs torch's threads."""

from __future__ import annotations

import types

import torch

from toolwire.runtime.cpus import usable_cpus
from toolwire.services.decode import sampling
from toolwire.services.decode.batch_engine import BatchEngine, torch_default_threads
from toolwire.services.decode.config import DecodeConfig
from toolwire.services.decode.server import make_engine
from toolwire.stack.cli import parser


def _load(*argv: str) -> BatchEngine:
    engine = make_engine(DecodeConfig.from_args(parser().parse_args(["serve", "decode", *argv])))
    engine.load()
    return engine


def test_the_ggml_step_leaves_torch_alone_and_the_torch_step_takes_its_threads():
    usable = min(usable_cpus(), torch_default_threads())
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(usable + 1)  # a count neither engine would set
        ggml = _load("--model", "embedded", "--kv-tokens", "256")
        assert type(ggml.step).__name__ == "GgmlStep"
        assert ggml.torch_threads is None and torch.get_num_threads() == usable + 1
        ggml.step.close()
        # loaded after it in the same process (as the test session and bench.run do); each
        # engine's step thread sets its own count from torch_threads when it starts
        tiny = _load("--model", "random:tiny", "--step", "torch")
        assert tiny.torch_threads == torch.get_num_threads() == usable
    finally:
        torch.set_num_threads(before)


def test_greedy_takes_the_first_of_equal_maxima_as_torch_does():
    """Greedy rows are argmaxed by numpy on CPU fp32 logits (a 49,152-token row in 9-15 µs
    against torch's ~100): the same token as torch's argmax, ties included."""
    with torch.inference_mode():  # as the step thread samples
        logits = torch.full((5, 49152), -1.0)
        logits[0, [7, 3000, 49151]] = 2.0  # a tie: the first wins
        logits[1, 12] = float("inf")
        logits[2, 40000] = 0.5
        logits[3, [9, 30]] = float("nan")  # both take the first NaN
        logits[4, 5] = 3.0
        rows = logits[[4, 0, 1, 2, 3]]  # the engine's row selection: a copy
        seqs = [types.SimpleNamespace(matcher=None, temperature=0.0) for _ in range(5)]
        expected = [5, 7, 12, 40000, 9]
        assert sampling.pick(seqs, rows) == rows.argmax(dim=-1).tolist() == expected
        strided = logits[[4, 0]].t().contiguous().t()  # column-major: strides (1, 2)
        assert not strided.is_contiguous()
        assert sampling.pick(seqs[:2], strided) == [5, 7]
