"""Prompt-lookup drafts (services/decode/drafts.py): what follows the latest earlier occurrence
of the sequence's last tokens, never the occurrence that is the suffix itself; a draft only
where its expected gain beats what its positions cost the batch; the acceptance learned from
what a sequence writes where it did not draft (a shadow draft), and from drafts verified."""

from __future__ import annotations

import pytest

from toolwire.services.decode.drafts import PromptLookup, StepCost, expected_tokens

# The embedded model's forward on 2 cores, as measured at load: 11.6 ms for one position,
# 20 ms for two, 57 ms for nine.
CPU = StepCost({1: 0.0116, 2: 0.020, 9: 0.057})


def test_the_continuation_is_what_followed_the_latest_earlier_occurrence():
    d = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 7])
    d.extend([2, 3, 4])  # the suffix 2 3 4 last appeared before 6 7
    assert d.continuation(room=4) == ([6, 7, 2, 3], 3)
    assert d.continuation(room=2) == ([6, 7], 3)  # what max_tokens leaves


def test_a_shorter_suffix_is_looked_up_where_the_longer_one_never_appeared():
    d = PromptLookup([5, 6, 7, 8])
    d.extend([1, 6, 7])  # 1 6 7 is new; 6 7 was followed by 8
    assert d.continuation(room=4) == ([8, 1, 6, 7], 2)


def test_nothing_to_copy_no_continuation():
    assert PromptLookup([1, 2, 3, 4]).continuation(room=4) == ([], 0)  # 3 4 only appears as itself
    assert PromptLookup([]).continuation(room=4) == ([], 0)


def test_expected_tokens_and_the_step_cost():
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert CPU.seconds(1) == pytest.approx(0.0116)
    assert CPU.seconds(9) == pytest.approx(0.057)
    assert CPU.extra(1, 1) == pytest.approx(0.0084)  # one position to two: the kernels change
    assert CPU.extra(16, 4) == pytest.approx(4 * (0.057 - 0.020) / 7)


def _choose(d: PromptLookup, batch: int, positions: int) -> int:
    continuation = list(range(8))
    rate = batch / CPU.seconds(positions)
    return d.choose(continuation, lambda k: CPU.extra(positions, k), rate)


def test_a_copying_sequence_drafts_long_alone_and_a_likely_one_not_in_a_full_batch():
    copier = PromptLookup([])
    for _ in range(20):
        copier.record(8, 8)  # every draft kept whole
    assert copier.accept > 0.95
    assert _choose(copier, batch=1, positions=1) == 8
    likely = PromptLookup([])
    likely.kept, likely.refused = 8.0, 2.0  # 4 in 5 kept
    assert 2 <= _choose(likely, batch=1, positions=1) <= 6
    # In a batch of 16 a position costs about what a sequence's token does: 4 in 5 is not
    # enough to pay for it.
    assert _choose(likely, batch=16, positions=16) == 0


def test_a_new_sequence_drafts_once_it_is_seen_copying():
    d = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9])
    d.extend([1, 2, 3])  # 1 2 3 appeared before 4 5 6 ...
    seen = []
    while True:
        continuation, _ = d.continuation(room=8)
        k = d.choose(continuation, lambda k: CPU.extra(1, k), 1 / CPU.seconds(1))
        if k:
            break
        seen.append(continuation[0])
        d.extend([continuation[0]])  # the model writes what the shadow draft held
    assert 1 <= len(seen) <= 3  # a few tokens in, it drafts
    assert seen == [4, 5, 6][: len(seen)]


def test_a_sequence_whose_lookups_are_chance_never_drafts():
    d = PromptLookup([])
    for _ in range(40):
        assert d.choose([7, 8, 9], lambda k: CPU.extra(1, k), 1 / CPU.seconds(1)) == 0
        d.extend([5])  # never the shadow's token
    assert d.accept < 0.05


def test_forced_text_after_a_token_is_not_judged_and_a_refused_draft_counts_once():
    d = PromptLookup([])
    d.choose([7], lambda k: CPU.extra(1, k), 1 / CPU.seconds(1))
    before = d.accept
    d.extend([7, 1, 2, 3])  # the shadow's token, then forced text that is not
    assert d.accept > before
    kept, refused = d.kept, d.refused
    d.record(4, 2)  # two kept, then the model's own token
    assert d.kept == pytest.approx(((kept * 0.9 + 1) * 0.9 + 1) * 0.9)
    assert d.refused == pytest.approx(refused * 0.9**3 + 1)


def test_where_a_position_costs_a_whole_step_a_good_copier_does_not_draft():
    expensive = StepCost({1: 0.010, 2: 0.020, 9: 0.090})
    d = PromptLookup([])
    d.kept, d.refused = 8.0, 2.0  # 4 in 5 kept
    rate = 1 / expensive.seconds(1)
    assert d.choose(list(range(8)), lambda k: expensive.extra(1, k), rate) == 0
    assert 2 <= _choose(d, batch=1, positions=1) <= 8  # on the CPU's costs it drafts


def test_the_cost_is_measured_with_sizes_taking_turns_and_a_busy_moment_does_not_skew_it():
    calls = []

    def forward(n: int) -> float:
        calls.append(n)
        busy = 10.0 if len(calls) <= 2 else 1.0  # the first two forwards ran beside a neighbour
        return busy * {1: 0.010, 2: 0.018, 9: 0.050}[n]

    cost = StepCost.measure(forward)
    assert calls[:6] == [1, 2, 9, 1, 2, 9]
    assert cost.one == pytest.approx(0.010)
    assert cost.seconds(9) == pytest.approx(0.050)
