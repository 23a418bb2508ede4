"""The ggml step's sampler, in numpy (services/decode/numpy_sampling.py): the grammar's mask
applied from xgrammar's bitmask (its layout: tests/unit/constraints/test_xgrammar_core.py), greedy's first maximum, and temperature / top-p draws from each
sequence's own seeded generator, with torch's rules."""

from __future__ import annotations

import types

import numpy as np
import pytest

from toolwire.constraints import xgrammar_core as xgr
from toolwire.services.decode import numpy_sampling, sampling

VOCAB = [chr(i) for i in range(32, 127)] + ["<eos>"]  # 96 tokens: three bitmask words
EOS = len(VOCAB) - 1
DIGITS = [VOCAB.index(c) for c in "0123456789"]


def seq(temperature=1.0, top_p=1.0, seed=None, matcher=None):
    return types.SimpleNamespace(
        matcher=matcher,
        temperature=temperature,
        top_p=top_p,
        generator=sampling.generator(seed, temperature, uses_torch=False),
    )


def draws(row, n, **kw):
    s = seq(**kw)
    return [sampling.pick([s], row[None, :].copy())[0] for _ in range(n)]


def test_the_mask_leaves_only_the_tokens_the_grammar_admits():
    info = xgr.TokenizerInfo(VOCAB, stop_token_ids=[EOS])
    compiled = xgr.GrammarCompiler(info).compile_grammar(xgr.Grammar.from_regex("[0-9]+"))
    constrained = seq(temperature=0.0, matcher=xgr.GrammarMatcher(compiled))
    free = seq(temperature=0.0)
    logits = np.random.default_rng(1).standard_normal((2, len(VOCAB))).astype(np.float32)
    before = logits.copy()
    bitmask = xgr.allocate_token_bitmask(2, len(VOCAB))
    assert sampling.apply_masks([constrained, free], logits, bitmask) > 0
    assert np.flatnonzero(np.isfinite(logits[0])).tolist() == DIGITS
    assert np.array_equal(logits[0, DIGITS], before[0, DIGITS])
    assert np.array_equal(logits[1], before[1])  # no grammar: untouched
    assert sampling.pick([constrained, free], logits)[0] in DIGITS


def test_no_grammar_no_mask_time():
    logits = np.zeros((1, len(VOCAB)), np.float32)
    assert sampling.apply_masks([seq()], logits, xgr.allocate_token_bitmask(1, len(VOCAB))) == 0


def test_greedy_takes_the_first_of_equal_maxima():
    logits = np.full((5, 49152), -1.0, np.float32)
    logits[0, [7, 3000, 49151]] = 2.0  # a tie: the first wins
    logits[1, 12] = np.inf
    logits[2, 40000] = 0.5
    logits[3, [9, 30]] = np.nan  # both take the first NaN, as torch's argmax
    logits[4, 5] = 3.0
    greedy = [seq(temperature=0.0) for _ in range(5)]
    assert sampling.pick(greedy, logits) == [7, 12, 40000, 9, 5]


def test_a_seed_reproduces_its_draws_and_another_seed_differs():
    row = np.random.default_rng(2).standard_normal(49152).astype(np.float32)
    first = draws(row, 40, seed=7, top_p=0.95)
    assert draws(row, 40, seed=7, top_p=0.95) == first
    assert draws(row, 40, seed=8, top_p=0.95) != first
    assert len(set(first)) > 20  # it samples, not a constant


def test_unseeded_draws_sample_too():
    row = np.zeros(1000, np.float32)
    assert len(set(draws(row, 30))) > 20


def test_top_p_keeps_only_the_nucleus():
    """p = 0.5, 0.3, 0.15, 0.05 with top_p 0.7: the third token's predecessors hold 0.8 > 0.7,
    so it and the fourth are cut, and the first two share the draws 5 : 3."""
    row = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    got = draws(row, 4000, seed=1, top_p=0.7)
    assert set(got) == {0, 1}
    assert got.count(0) / len(got) == pytest.approx(0.5 / 0.8, abs=0.03)


def _nucleus_by_full_sort(p, top_p):
    """torch's rule (torch_sampling.pick) on the whole sorted vocabulary."""
    q = p / p.sum()
    order = np.argsort(-q, kind="stable")
    s = q[order]
    return set(order[~(np.cumsum(s) - s > top_p)].tolist())


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.999])
def test_the_nucleus_is_found_below_the_first_floor_too(top_p):
    """One likely token over 20,000 whose probabilities lie under a thousandth of its own
    (together they hold most of the mass): the nucleus reaches into them, and is the one a
    sort of the whole vocabulary gives."""
    rng = np.random.default_rng(3)
    z = np.concatenate([[0.0], -8.0 - rng.random(20000)])
    p = np.exp(z - z.max())
    ids, w = numpy_sampling.nucleus(p, top_p)
    assert set(ids.tolist()) == _nucleus_by_full_sort(p, top_p)
    assert np.array_equal(w, p[ids]) and ids[0] == 0


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_the_temperature_shapes_the_draws_as_softmax_of_logits_over_it(temperature):
    row = np.full(64, -np.inf, np.float32)  # all but three masked out
    row[[3, 10, 40]] = [0.0, 1.0, 2.0]
    got = np.bincount(draws(row, 20000, seed=5, temperature=temperature), minlength=64)
    want = np.exp(row[[3, 10, 40]] / temperature)
    want /= want.sum()
    assert got.sum() == got[[3, 10, 40]].sum()
    assert got[[3, 10, 40]] / got.sum() == pytest.approx(want, abs=0.015)


def test_greedy_needs_no_generator_and_the_ggml_step_gets_numpys():
    assert sampling.generator(7, 0.0, uses_torch=False) is None
    assert isinstance(sampling.generator(7, 0.7, uses_torch=False), np.random.Generator)
    assert isinstance(sampling.generator(None, 0.7, uses_torch=False), np.random.Generator)


def test_accepting_or_resampling_a_draft_keeps_the_sampling_distribution():
    """The speculative rule for a point-mass draft: the token is kept with probability p(d),
    else drawn from p without d. Whatever the draft, the tokens come out distributed as p."""
    row = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    p = np.exp(row[0]) / np.exp(row[0]).sum()
    for proposed, top_p in ((0, 1.0), (3, 1.0), (1, 0.9)):
        s = seq(temperature=1.0, top_p=top_p, seed=proposed)
        n = 20000
        got = (
            np.bincount(
                [numpy_sampling.accept_or_resample(s, row, proposed) for _ in range(n)], minlength=4
            )
            / n
        )
        want = p.copy()
        if top_p < 1:  # the nucleus: 0.5 + 0.3 + 0.15 passes 0.9
            want[3] = 0
            want /= want.sum()
        assert np.abs(got - want).max() < 0.015, (proposed, got, want)


def test_greedy_keeps_a_draft_token_only_where_it_is_the_argmax():
    row = np.array([[0.0, 2.0, 2.0, 1.0]], np.float32)
    greedy = seq(temperature=0.0)
    assert numpy_sampling.accept_or_resample(greedy, row, 1) == 1
    assert numpy_sampling.accept_or_resample(greedy, row, 2) == 1  # the first maximum
    assert numpy_sampling.accept_or_resample(greedy, row, None) == 1
