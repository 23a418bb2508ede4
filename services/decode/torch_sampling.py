"""Masking and sampling torch logits (the torch steps'), on their device.

Imported only where a torch step runs: torch is loaded there already, so xgrammar's own
package (which imports torch) gives its mask kernel. The bitmask is the numpy array the
matchers fill, viewed as a tensor without a copy.

Greedy rows are picked by numpy where the logits are float32 on the CPU: numpy's argmax
follows torch's first-maximum rule, and does not wake torch's OpenMP pool, whose threads
would take a core from the step's own (docs/performance.md, The decode step)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .sampling import Sampled


def apply_masks(seqs: Sequence[Sampled], logits: torch.Tensor, bitmask: np.ndarray) -> float:
    """Mask each constrained row to the tokens its grammar admits; the seconds it took."""
    matchers = [(i, s.matcher) for i, s in enumerate(seqs) if s.matcher is not None]
    if not matchers:
        return 0.0
    from xgrammar import apply_token_bitmask_inplace

    constrained = [i for i, _ in matchers]
    t0 = time.perf_counter()
    for i, matcher in matchers:
        matcher.fill_next_token_bitmask(bitmask, i)
    rows = torch.from_numpy(bitmask[: len(seqs)]).to(logits.device)
    apply_token_bitmask_inplace(logits, rows, indices=constrained)
    return time.perf_counter() - t0


def greedy(logits: torch.Tensor) -> list[int]:
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return logits.detach().numpy().argmax(axis=-1).tolist()
    return logits.argmax(dim=-1).tolist()


def probabilities(row: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """softmax(row / temperature) on the CPU (seeded generators are CPU), zero outside the
    top-p nucleus (unnormalized there: multinomial takes weights)."""
    probs = torch.softmax(row.cpu() / temperature, dim=-1)
    if 0 < top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        cut = sorted_p.cumsum(0) - sorted_p > top_p
        sorted_p[cut] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return probs


def pick(seqs: Sequence[Sampled], logits: torch.Tensor) -> list[int]:
    """One token per row of (already masked) logits: greedy where the temperature is 0."""
    best = greedy(logits)
    tokens = []
    for i, s in enumerate(seqs):
        if s.temperature <= 0:
            tokens.append(best[i])
            continue
        probs = probabilities(logits[i], s.temperature, s.top_p)
        tokens.append(int(torch.multinomial(probs, 1, generator=s.generator)))
    return tokens


def accept_or_resample(s: Sampled, row: torch.Tensor, proposed: int | None) -> int:
    """numpy_sampling.accept_or_resample's rule on a torch row (1, vocab): greedy keeps the
    draft token where it is the argmax; with a temperature it is kept with probability
    p(proposed), else the token is drawn from p with `proposed` taken out."""
    if proposed is None or s.temperature <= 0:
        return pick([s], row)[0]
    probs = probabilities(row[0], s.temperature, s.top_p)
    total = float(probs.sum())
    if float(torch.rand(1, generator=s.generator)) * total < float(probs[proposed]):
        return int(proposed)
    probs[proposed] = 0.0
    return int(torch.multinomial(probs, 1, generator=s.generator))
