"""How many threads the next engine step runs: the count that has lately been fastest.

A step's threads meet after every op (ggml's barriers spin; torch's OpenMP pool joins). A thread
the kernel has descheduled for some other process holds every other thread at that barrier for
its time slice, and a step has hundreds of barriers. On a quiet machine each CPU is worth a
thread; beside one busy process on two cores, two threads ran many times slower than one
(docs/engines.md, Step threads). Nothing the process can read says which case it is in (the
affinity and the quota bound the count; /proc/loadavg and PSI are the host's or lag by
seconds), so the count is measured: the step's own time, at the count it runs and, now and
then, at a neighbouring count (a probe).

- Steps are compared only with steps of about the same size: the estimate is kept per
  (thread count, power-of-two bucket of the step's tokens).
- A probe tries one count down or up from the current one. If its step took at least
  `WIN` less than the current count's recent time at that size, the probe's count becomes
  current. Each losing probe doubles the wait before the next (`PROBE_MIN_S` up to
  `PROBE_MAX_S`): on a quiet machine a probe costs one slower step every few seconds.
- A step at the current count taking `SURPRISE` times its recent time (a neighbour has just
  started) calls a probe at once, not after the wait.

`fixed` keeps the ceiling always: the behaviour before this policy, for benches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

POLICIES = ("adaptive", "fixed")

PROBE_MIN_S = 0.25
PROBE_MAX_S = 8.0
WIN = 0.10  # a probe must be this much faster to take over (one sample against a mean)
SURPRISE = 3.0
ALPHA = 0.3  # weight of the newest step in the running estimate
STALE_S = 5.0  # an estimate older than this is not compared against
MAX_BUCKET = 12  # steps of 4,096 tokens and more are one bucket


@dataclass
class _Estimate:
    seconds: float
    at: float


def bucket(tokens: int) -> int:
    return min(max(tokens, 1).bit_length(), MAX_BUCKET)


class StepThreads:
    """`choose(tokens)` before a step, `record(threads, tokens, seconds)` after it."""

    def __init__(
        self,
        ceiling: int,
        policy: str = "adaptive",
        clock: Callable[[], float] = time.monotonic,
    ):
        if policy not in POLICIES:
            raise ValueError(f"thread policy {policy!r}: one of {', '.join(POLICIES)}")
        self.ceiling = max(1, ceiling)
        self.policy = policy
        self.clock = clock
        self.current = self.ceiling
        self.interval = PROBE_MIN_S
        self.next_probe = clock() + PROBE_MIN_S
        self._est: dict[tuple[int, int], _Estimate] = {}
        self._down = True  # which side the next probe tries, alternating where both exist
        self.switches = 0  # changes of the current count (a metric)

    @property
    def adaptive(self) -> bool:
        return self.policy == "adaptive" and self.ceiling > 1

    def choose(self, tokens: int) -> int:
        if not self.adaptive or self.clock() < self.next_probe:
            return self.current
        return self._probe_count()

    def _probe_count(self) -> int:
        down = max(1, self.current - max(1, self.current // 4))
        up = min(self.ceiling, self.current + max(1, self.current // 4))
        if down == self.current:
            return up
        if up == self.current:
            return down
        self._down = not self._down
        return down if self._down else up

    def record(self, threads: int, tokens: int, seconds: float) -> None:
        if not self.adaptive:
            return
        now, b = self.clock(), bucket(tokens)
        mine = self._est.get((self.current, b))
        recent = mine.seconds if mine is not None and now - mine.at < STALE_S else None
        if threads != self.current:  # a probe
            if recent is not None and seconds < recent * (1 - WIN):
                self.current = threads
                self.switches += 1
                self.interval = PROBE_MIN_S
            else:
                self.interval = min(self.interval * 2, PROBE_MAX_S)
            self.next_probe = now + self.interval
        elif recent is not None and seconds > SURPRISE * recent:
            self.interval = PROBE_MIN_S
            self.next_probe = now
        self._update(threads, b, seconds, now)

    def _update(self, threads: int, b: int, seconds: float, now: float) -> None:
        e = self._est.get((threads, b))
        if e is None or now - e.at >= STALE_S:
            self._est[(threads, b)] = _Estimate(seconds, now)
        else:
            e.seconds += ALPHA * (seconds - e.seconds)
            e.at = now
