"""Masking and sampling numpy logits (the ggml step's), without torch.

The rules are the torch sampler's (torch_sampling.py): a disallowed token's logit is -inf,
greedy takes the first maximum, top-p keeps the most probable tokens up to the one whose
predecessors' mass passes top_p. Only the random stream differs: each sequence draws from
its own numpy Generator, so a seed reproduces its output, not torch's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from toolwire.constraints import xgrammar_core as xgr

if TYPE_CHECKING:
    from .sampling import Sampled

# Thresholds, as fractions of the largest probability, below which top-p first looks for its
# nucleus: a sort of the whole vocabulary costs 2.5-5 ms a token (49,152 ids), the handful
# above a threshold microseconds. 0 (every token left) ends the search.
NUCLEUS_FLOORS = (1e-3, 1e-6, 1e-9, 1e-12, 0.0)


def apply_masks(seqs: Sequence[Sampled], logits: np.ndarray, bitmask: np.ndarray) -> float:
    """Each constrained row's disallowed tokens to -inf, in place; the seconds it took."""
    if all(s.matcher is None for s in seqs):
        return 0.0
    t0 = time.perf_counter()
    # fill_next_token_bitmask's False: the grammar admits every token, the row stays as it is.
    need = [
        i
        for i, s in enumerate(seqs)
        if s.matcher is not None and s.matcher.fill_next_token_bitmask(bitmask, i)
    ]
    if need:
        xgr.apply_token_bitmask_inplace(logits, bitmask, need)
    return time.perf_counter() - t0


def nucleus(p: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The ids top-p keeps and their weights (unnormalized `p`), most probable first. Where
    the tokens above a floor hold more than top_p of the mass, every token below it has
    predecessors past top_p: the nucleus lies above the floor, and only those are sorted."""
    mass = top_p * float(p.sum())
    top = float(p.max())
    for floor in NUCLEUS_FLOORS:
        ids = np.flatnonzero(p > floor * top)
        if float(p[ids].sum()) > mass:
            break
    order = ids[np.argsort(-p[ids])]  # ties in any order, as torch's sort; the same each run
    w = p[order]
    keep = int(np.count_nonzero(np.cumsum(w) - w <= mass))  # a prefix: the sums only grow
    return order[:keep], w[:keep]


def weights(
    row: np.ndarray, temperature: float, top_p: float
) -> tuple[np.ndarray | None, np.ndarray] | None:
    """What `draw` samples from: (ids, unnormalized weights) within the top-p nucleus (ids
    None: every id, in order); None where the row has an inf or NaN logit or nothing allowed,
    where torch's sampler would fail and the argmax stands in."""
    z = row.astype(np.float64) / temperature
    top = z.max()
    if not np.isfinite(top):
        return None
    p = np.exp(z - top)
    if 0 < top_p < 1:
        return nucleus(p, top_p)
    return None, p


def _inverse_cdf(ids: np.ndarray | None, w: np.ndarray, rng: np.random.Generator) -> int:
    cdf = np.cumsum(w)
    # side="right": the first id whose cumulative weight passes u, never a zero-weight one
    k = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)
    return int(ids[k]) if ids is not None else k


def draw(row: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """One token from softmax(row / temperature), within the top-p nucleus."""
    got = weights(row, temperature, top_p)
    if got is None:
        return int(row.argmax())
    return _inverse_cdf(*got, rng)


def accept_or_resample(s: Sampled, row: np.ndarray, proposed: int | None) -> int:
    """The token for a (masked) row whose draft token is `proposed`: the draft token where the
    model keeps it, else the model's own, so that the output has `pick`'s distribution. Greedy
    keeps it where it is the argmax. With a temperature the draft is a point mass, so the
    speculative sampling rule (Leviathan et al., 2023) keeps it with probability p(proposed)
    and otherwise draws from p with `proposed` taken out."""
    if proposed is None or s.temperature <= 0:
        return pick([s], row)[0]
    got = weights(row[0], s.temperature, s.top_p)
    if got is None:
        return int(row[0].argmax())
    ids, w = got
    if ids is None:
        at = int(proposed)
    else:  # the nucleus, most probable first: is the draft token in it?
        where = np.flatnonzero(ids == proposed)
        at = int(where[0]) if len(where) else -1
    total = float(w.sum())
    if at >= 0 and s.generator.random() * total < w[at]:
        return int(proposed)
    if at >= 0:
        w = w.copy()
        w[at] = 0.0
    return _inverse_cdf(ids, w, s.generator)


def pick(seqs: Sequence[Sampled], logits: np.ndarray) -> list[int]:
    """One token per row of (already masked) logits: greedy where the temperature is 0."""
    best = logits.argmax(axis=-1).tolist()  # the first maximum, as torch's argmax
    tokens = []
    for i, s in enumerate(seqs):
        if s.temperature <= 0:
            tokens.append(best[i])
            continue
        # sampling.generator() gives every sampled numpy row its own, seeded or fresh
        tokens.append(draw(logits[i], s.temperature, s.top_p, s.generator))
    return tokens
