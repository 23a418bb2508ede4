"""Prompt-lookup drafts (services/decode/drafts.py): what follows the latest earlier occurrence
of the sequence's last tokens, never the occurrence that is the suffix itself; a length that
follows what is kept; a pause, longer each time, where drafts are mostly refused."""

from __future__ import annotations

from toolwire.services.decode.drafts import MAX_DRAFT, PAUSE_STEPS, PromptLookup


def test_the_draft_is_what_followed_the_latest_earlier_occurrence():
    d = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 7])
    d.extend([2, 3, 4])  # the suffix 2 3 4 last appeared before 6 7
    assert d.propose(room=4) == [6, 7, 2, 3]
    assert d.propose(room=2) == [6, 7]  # what max_tokens leaves


def test_a_shorter_suffix_is_looked_up_where_the_longer_one_never_appeared():
    d = PromptLookup([5, 6, 7, 8])
    d.extend([1, 6, 7])  # 1 6 7 is new; 6 7 was followed by 8
    assert d.propose(room=4)[:1] == [8]


def test_nothing_to_copy_no_draft():
    d = PromptLookup([1, 2, 3, 4])
    assert d.propose(room=4) == []  # the suffix 3 4 (and 4) only appears as itself
    assert PromptLookup([]).propose(room=4) == []


def test_the_length_grows_while_drafts_are_kept_whole_and_shrinks_to_what_was_kept():
    d = PromptLookup([])
    start = d.length
    d.record(start, start)
    assert d.length == min(MAX_DRAFT, 2 * start)
    d.record(d.length, 1)
    assert d.length == 2


def test_drafts_mostly_refused_pause_longer_each_time_and_kept_drafts_end_that():
    d = PromptLookup([1, 2, 1, 2, 1])
    pauses = []
    for _ in range(3):
        while d.pause == 0:
            assert d.propose(room=8)  # there is something to copy
            d.record(d.length, 0)
        pauses.append(d.pause)
        for _ in range(d.pause):
            assert d.propose(room=8) == []
    assert pauses == [PAUSE_STEPS[0], 2 * PAUSE_STEPS[0], 4 * PAUSE_STEPS[0]]
    d.record(1, 1)  # a draft kept whole: the next slump pauses short again
    assert d.next_pause == PAUSE_STEPS[0]
