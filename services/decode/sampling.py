"""The next token of each row of a step's logits: the grammar's mask first, then greedy or
temperature / top-p sampling, in the logits' own library.

The ggml step's logits are a numpy array and are sampled in numpy (numpy_sampling.py): a
process that runs that step never imports torch (services/decode/step_choice.py). The torch
steps' tensors are sampled by torch (torch_sampling.py, imported only when one comes), on
their device. Both read the same numpy bitmask, which xgrammar's matcher fills
(toolwire/constraints/xgrammar_core.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import numpy_sampling

if TYPE_CHECKING:
    from toolwire.constraints.xgrammar_core import GrammarMatcher


class Sampled(Protocol):
    """What sampling reads of a sequence."""

    matcher: GrammarMatcher | None
    # numpy's Generator for numpy logits, torch's (or None: torch's global one) for tensors
    generator: Any

    @property
    def temperature(self) -> float: ...

    @property
    def top_p(self) -> float: ...


def generator(seed: int | None, temperature: float, uses_torch: bool) -> Any:
    """A sequence's own random stream: the same seed, the same draws. numpy's for the ggml
    step (unseeded: fresh entropy); torch's for a torch step, where an unseeded draw keeps
    torch's global generator as before."""
    if temperature <= 0:
        return None
    if not uses_torch:
        return np.random.default_rng(seed)
    if seed is None:
        return None
    import torch

    return torch.Generator().manual_seed(seed)


def apply_masks(seqs: Sequence[Sampled], logits: Any, bitmask: np.ndarray) -> float:
    """Mask each constrained row to the tokens its grammar admits; the seconds it took."""
    if isinstance(logits, np.ndarray):
        return numpy_sampling.apply_masks(seqs, logits, bitmask)
    from . import torch_sampling

    return torch_sampling.apply_masks(seqs, logits, bitmask)


def pick(seqs: Sequence[Sampled], logits: Any) -> list[int]:
    """One token per row of (already masked) logits: greedy where the temperature is 0."""
    if isinstance(logits, np.ndarray):
        return numpy_sampling.pick(seqs, logits)
    from . import torch_sampling

    return torch_sampling.pick(seqs, logits)


def accept_or_resample(seq: Sampled, row: Any, proposed: int | None) -> int:
    """A draft's row (1, vocab), masked: its draft token kept, or the one written in its place
    (numpy_sampling.accept_or_resample), in the row's library."""
    if isinstance(row, np.ndarray):
        return numpy_sampling.accept_or_resample(seq, row, proposed)
    from . import torch_sampling

    return torch_sampling.accept_or_resample(seq, row, proposed)
