"""Prompt-lookup drafts (services/decode/drafts.py): what follows the latest earlier occurrence
of the sequence's last tokens, never the occurrence that is the suffix itself; a draft only
where its expected gain beats what its positions cost the batch; fewer probes where drafts
are refused."""

from __future__ import annotations

import pytest

from toolwire.services.decode.drafts import (
    PROBE_DRAFT,
    PROBE_STEPS,
    PromptLookup,
    StepCost,
    expected_tokens,
)

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
    likely.idle = 0  # its first probe is behind it
    assert 2 <= _choose(likely, batch=1, positions=1) <= 6
    # In a batch of 16 a position costs about what a sequence's token does: 4 in 5 is not
    # enough to pay for it.
    assert _choose(likely, batch=16, positions=16) == 0


def test_drafts_mostly_refused_stop_and_probes_come_less_often():
    d = PromptLookup([])
    assert _choose(d, batch=1, positions=1) > 0  # the prior drafts, or the first probe does
    d.record(2, 0)
    for _ in range(10):
        d.record(2, 0)
    assert d.accept < 0.2
    waits = []
    for _ in range(3):
        steps = 1
        while (k := _choose(d, batch=1, positions=1)) == 0:
            steps += 1
        assert k == PROBE_DRAFT
        waits.append(steps)
        d.record(k, 0)
    # the first draft was a probe, refused: the waits double from there
    assert waits == [2 * PROBE_STEPS[0] + 1, 4 * PROBE_STEPS[0] + 1, 8 * PROBE_STEPS[0] + 1]
    while _choose(d, batch=1, positions=1) == 0:
        pass
    d.record(PROBE_DRAFT, PROBE_DRAFT)  # a probe kept whole: the next wait is the first again
    assert d.probe_wait == PROBE_STEPS[0]


def test_where_a_position_costs_a_whole_step_only_probes_draft():
    expensive = StepCost({1: 0.010, 2: 0.020, 9: 0.090})
    d = PromptLookup([])
    d.record(PROBE_DRAFT, PROBE_DRAFT)  # the first probe, kept whole
    rate = 1 / expensive.seconds(1)
    assert d.choose(list(range(8)), lambda k: expensive.extra(1, k), rate) == 0
    assert 2 <= _choose(d, batch=1, positions=1) <= 8  # on the CPU's costs it drafts


def test_no_probe_in_a_batch_where_even_a_copying_sequence_would_not_draft():
    d = PromptLookup([])  # its first probe is due
    assert _choose(d, batch=16, positions=16) == 0
    assert _choose(d, batch=1, positions=1) > 0
