"""Model-free drafts for speculative decoding: prompt lookup.

What a tool-calling conversation writes is often already in its context: arguments copy the
user's words, the answer after a tool result restates the result, structured output repeats
keys. So a sequence's draft is what followed, the last time, the tokens it has just written:
the latest earlier occurrence of its last `n` tokens (n = 3, else 2) in its prompt and output,
and the tokens after it. The scheduler verifies the draft in the sequence's next forward
(services/decode/scheduler.py) and keeps what the model would have written itself.

A draft costs a forward's extra positions, so its length follows what is accepted: it grows
while drafts are taken whole and shrinks to what was taken; a sequence whose drafts are mostly
refused stops drafting for a while, longer each time (prose with nothing to copy then runs as
it would without speculation).
"""

from __future__ import annotations

NGRAMS = (3, 2)  # suffix lengths looked up, longest first: a longer match is a better guess
MAX_DRAFT = 8  # tokens a draft may hold; the forward verifies them all at once
START_DRAFT = 4
# Below this share of drafted tokens accepted (a running mean over about 8 drafts) the
# sequence pauses: a refused position costs the step's time and gives nothing.
MIN_ACCEPT = 0.3
PAUSE_STEPS = (8, 256)  # the first pause, and the longest after pauses that did not help


class PromptLookup:
    """One sequence's drafter: its tokens so far and, for each n-gram, where the tokens after
    its latest occurrence start."""

    def __init__(self, prompt: list[int], max_draft: int = MAX_DRAFT):
        self.tokens: list[int] = []
        self.follows: dict[tuple[int, ...], int] = {}
        self.max_draft = max_draft
        self.length = min(START_DRAFT, max_draft)
        self.accept_rate = 1.0
        self.pause = 0  # steps left without drafts
        self.next_pause = PAUSE_STEPS[0]
        self.extend(prompt)

    def extend(self, tokens: list[int]) -> None:
        """The sequence wrote (or was given) these tokens."""
        for t in tokens:
            at = len(self.tokens)
            # The n-grams ending just before `at` are now followed by a token: index them.
            for n in NGRAMS:
                if at >= n:
                    self.follows[tuple(self.tokens[at - n : at])] = at
            self.tokens.append(t)

    def propose(self, room: int) -> list[int]:
        """Up to `room` tokens to verify after the sequence's last one; [] when pausing or
        nothing matches."""
        if self.pause > 0:
            self.pause -= 1
            return []
        want = min(self.length, room)
        if want <= 0:
            return []
        for n in NGRAMS:
            if len(self.tokens) < n:
                continue
            at = self.follows.get(tuple(self.tokens[-n:]))
            if at is not None:
                return self.tokens[at : at + want]
        return []

    def record(self, drafted: int, accepted: int) -> None:
        """How much of the last draft the model kept: the next draft's length, or a pause."""
        if drafted <= 0:
            return
        self.accept_rate += (accepted / drafted - self.accept_rate) / 8
        if accepted == drafted:
            self.length = min(self.max_draft, self.length * 2)
        else:
            self.length = max(1, accepted + 1)
        if self.accept_rate < MIN_ACCEPT:
            self.pause = self.next_pause
            self.next_pause = min(PAUSE_STEPS[1], self.next_pause * 2)
            self.accept_rate = MIN_ACCEPT  # after the pause, a few drafts decide again
            self.length = 1
        elif accepted == drafted:
            self.next_pause = PAUSE_STEPS[0]  # drafting pays again: a later slump pauses short
