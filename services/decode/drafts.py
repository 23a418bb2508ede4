"""Model-free drafts for speculative decoding: prompt lookup, and when a draft pays.

What a tool-calling conversation writes is often already in its context: arguments copy the
user's words, the answer after a tool result restates the result, structured output repeats
keys. So a sequence's draft is what followed, the last time, the tokens it has just written:
the latest earlier occurrence of its last `n` tokens (n = 3, else 2) in its prompt and output,
and the tokens after it. The scheduler verifies the draft in the sequence's next forward
(services/decode/scheduler.py) and keeps what the model would have written itself.

A draft is not free: each position it adds is computed for the whole batch, and on a CPU one
more position costs 40-70% of a one-token step (bench: 11.6 ms for one position of the
embedded model on 2 cores, 20 ms for two, 57 ms for nine). So a sequence drafts `k` tokens
only where the tokens it expects to gain, at its own acceptance rate, outweigh what those
positions cost the batch (`StepCost`, measured when the engine loads).

The acceptance rate needs no draft to be learned: where a sequence has a continuation but
does not draft, the token it writes next is compared with the continuation's first (a
shadow draft, free), so a sequence that starts copying drafts a few tokens in, and prose
whose lookups are chance never pays for a refused draft. Verified drafts add their own
evidence. (Probing instead, a few tokens verified at a sequence's first long match, cost
the agent and prose workloads 5-15% in refused probes: docs/performance.md, Speculation.)
"""

from __future__ import annotations

from collections.abc import Callable

NGRAMS = (3, 2)  # suffix lengths looked up, longest first: a longer match is a better guess
MAX_DRAFT = 8  # tokens a draft may hold; the forward verifies them all at once
# What a sequence's acceptance starts from, worth one token of evidence: a sequence drafts
# once it has been seen copying. Each token judged decays the evidence before it, so that a
# sequence's last ten or twenty tokens count most.
PRIOR_ACCEPT, PRIOR_WEIGHT, DECAY = 0.5, 1.0, 0.9
MARGIN = 1.1  # a draft must promise 10% more tokens than its positions cost the batch


def expected_tokens(accept: float, k: int) -> float:
    """Tokens a forward yields with a k-token draft, each draft token kept with probability
    `accept` once those before it were: the kept run, and one token of the model's own."""
    if accept >= 1.0:
        return k + 1.0
    return (1.0 - accept ** (k + 1)) / (1.0 - accept)


def _best(accept: float, longest: int, extra: Callable[[int], float]) -> tuple[int, float]:
    """The draft length (1..longest) with the most expected tokens gained per second of the
    positions it adds, and that yield."""
    best, best_yield = 0, 0.0
    for k in range(1, longest + 1):
        cost = extra(k)
        gain = expected_tokens(accept, k) - 1.0
        y = gain / cost if cost > 0 else float("inf")
        if y > best_yield:
            best, best_yield = k, y
    return best, best_yield


class StepCost:
    """A forward's time by the positions it computes, from timings at load: one position
    (matrix-vector kernels) apart, then a line through the larger ones (matrix kernels)."""

    def __init__(self, timings: dict[int, float]):
        self.one = timings[1]
        larger = sorted((n, t) for n, t in timings.items() if n > 1)
        (n0, t0), (n1, t1) = larger[0], larger[-1]
        self.per_position = max(0.0, (t1 - t0) / (n1 - n0))
        self.fixed = t0 - self.per_position * n0

    def seconds(self, positions: int) -> float:
        if positions <= 1:
            return self.one
        return max(self.one, self.fixed + self.per_position * positions)

    def extra(self, positions: int, more: int) -> float:
        return self.seconds(positions + more) - self.seconds(positions)

    @classmethod
    def measure(cls, forward: Callable[[int], float], sizes=(1, 2, 9), rounds: int = 5) -> StepCost:
        """`forward(n)`: the seconds one forward of n positions took; the median of `rounds`
        for each size. The sizes take turns, so that a busy moment (a neighbour starting, as
        a test session's stack does) slows all of them, not one: the policy reads the curve's
        shape, and one inflated size skews it."""
        runs: dict[int, list[float]] = {n: [] for n in sizes}
        for _ in range(rounds):
            for n in sizes:
                runs[n].append(forward(n))
        return cls({n: sorted(t)[len(t) // 2] for n, t in runs.items()})


class PromptLookup:
    """One sequence's drafter: its tokens so far, for each n-gram where the tokens after its
    latest occurrence start, and how often the model wrote what a draft would have held."""

    def __init__(self, prompt: list[int]):
        self.tokens: list[int] = []
        self.follows: dict[tuple[int, ...], int] = {}
        self.kept = PRIOR_ACCEPT * PRIOR_WEIGHT  # draft tokens the model wrote too (decayed)
        self.refused = (1 - PRIOR_ACCEPT) * PRIOR_WEIGHT  # draft tokens it did not
        # The first token of a continuation not drafted this step: judged by what comes next.
        self.shadow: int | None = None
        self.extend(prompt)

    def extend(self, tokens: list[int]) -> None:
        """The sequence wrote (or was given) these tokens: the first judges the shadow draft
        (what follows it is forced text, which says nothing of copying)."""
        if self.shadow is not None and tokens:
            self._judge(tokens[0] == self.shadow)
        self.shadow = None
        for t in tokens:
            at = len(self.tokens)
            # The n-grams ending just before `at` are now followed by a token: index them.
            for n in NGRAMS:
                if at >= n:
                    self.follows[tuple(self.tokens[at - n : at])] = at
            self.tokens.append(t)

    def continuation(self, room: int) -> tuple[list[int], int]:
        """Up to `room` (at most MAX_DRAFT) tokens that followed the latest earlier occurrence
        of the sequence's last tokens, and how many of those matched; ([], 0) when none."""
        want = min(MAX_DRAFT, room)
        if want <= 0:
            return [], 0
        for n in NGRAMS:
            if len(self.tokens) >= n:
                at = self.follows.get(tuple(self.tokens[-n:]))
                if at is not None:
                    return self.tokens[at : at + want], n
        return [], 0

    @property
    def accept(self) -> float:
        """The chance a draft token is kept once those before it were."""
        return self.kept / (self.kept + self.refused)

    def choose(self, continuation: list[int], extra: Callable[[int], float], rate: float) -> int:
        """How many of the continuation's tokens to verify: the k whose expected gain per
        second of the batch's time is best, if it beats what the batch makes of that time
        (`rate`: tokens a second) by MARGIN; else 0, and the continuation's first token is
        judged against what the sequence writes next."""
        best, best_yield = _best(self.accept, len(continuation), extra)
        if best and best_yield > rate * MARGIN:
            self.shadow = None
            return best
        self.shadow = continuation[0] if continuation else None
        return 0

    def record(self, drafted: int, kept: int) -> None:
        """How much of the last draft the model kept: `kept` tokens written alike, then the
        one it wrote instead (where it cut the draft short)."""
        for _ in range(kept):
            self._judge(True)
        if kept < drafted:
            self._judge(False)

    def _judge(self, kept: bool) -> None:
        self.kept = self.kept * DECAY + kept
        self.refused = self.refused * DECAY + (not kept)
