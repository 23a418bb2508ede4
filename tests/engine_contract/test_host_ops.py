"""What the engine runs on the host beside the step: torch's thread count and greedy sampling.

Beside the ggml step torch only samples, a few small ops a step; on its OpenMP pool they woke
a sleeping thread every step, which then took a core from the step's threads (README, The ggml
step: in-process, one stream, ITL 11.3 -> 8.8 ms). The torch step's forward needs torch's
threads."""

from __future__ import annotations

import types

import pytest
import torch

from toolwire.services.decode.server import make_engine
from toolwire.services.decode.torch_engine import TORCH_DEFAULT_THREADS, TorchEngine
from toolwire.stack.cli import parser
from toolwire.stack.cpus import usable_cpus


def _load(*argv: str) -> TorchEngine:
    engine = make_engine(parser().parse_args(["serve", "decode", *argv]))
    engine.load()
    return engine


def test_torch_runs_one_thread_beside_the_ggml_step_and_all_beside_the_torch_step():
    usable = min(usable_cpus(), TORCH_DEFAULT_THREADS)
    if usable < 2:
        pytest.skip("one CPU here: one torch thread either way")
    before = torch.get_num_threads()
    try:
        ggml = _load("--model", "embedded", "--kv-tokens", "256")
        assert type(ggml.step).__name__ == "GgmlStep"
        assert torch.get_num_threads() == 1
        ggml.step.close()
        # loaded after it in the same process (as the test session and bench.run do)
        _load("--model", "random:tiny", "--step", "torch")
        assert torch.get_num_threads() == usable
    finally:
        torch.set_num_threads(before)


def test_greedy_takes_the_first_of_equal_maxima_as_torch_does():
    """Greedy rows are argmaxed by numpy on CPU fp32 logits (a 49,152-token row in 9-15 µs
    against torch's ~100): the same token as torch's argmax, ties included."""
    logits = torch.full((3, 49152), -1.0)
    logits[0, [7, 3000, 49151]] = 2.0  # a tie: the first wins
    logits[1, 12] = float("inf")
    logits[2, 40000] = 0.5
    seqs = [
        types.SimpleNamespace(matcher=None, request=types.SimpleNamespace(temperature=0.0))
        for _ in range(3)
    ]
    engine = TorchEngine.__new__(TorchEngine)  # _sample reads no state for greedy rows
    assert engine._sample(seqs, logits) == logits.argmax(dim=-1).tolist() == [7, 12, 40000]
