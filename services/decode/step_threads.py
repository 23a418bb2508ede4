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
  (thread count, power-of-two bucket of the step's tokens), as a running mean.
- A probe tries one count down or up from the current one (a quarter of the count on a large
  machine). If its step took at least `WIN` less than the current count's recent time at that
  size, the probe's count becomes current (a mean of at least `SETTLED` steps: the first steps
  of a size are often slow). A losing probe doubles the wait before the next
  one in that direction (`PROBE_MIN_S` up to `PROBE_MAX_S`); the way back from a winning
  probe waits at least `BACK_S`.
- Waits count the steps' own time, not the clock: an idle server probes no more often than a
  busy one, and a probe costs at most one step in `PROBE_MAX_S` of stepping. On a quiet machine
  that is one slower step in 8 s; beside a neighbour, one slow step up.
- Below the ceiling, idle CPUs say more than step times: one thread keeps its core busy
  whether or not the neighbour is still there. `note_idle` takes the idle CPUs of the
  process's affinity (`toolwire.runtime.cpus.IdleCpus`); `IDLE_FOR_UP` of them, after a
  reading that showed none, calls a probe up at once (once per such change, so a host whose
  idle CPUs the process may not use, under a quota, probes no more than before).
- A step at the current count taking `SURPRISE` times its recent time (a neighbour has just
  started) calls a probe down at the next step. Not up: a slower step is never a reason for
  more threads, and beside a busy neighbour one-thread steps vary this much by themselves.

`fixed` keeps the ceiling always: the behaviour before this policy, for benches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

POLICIES = ("adaptive", "fixed")

PROBE_MIN_S = 0.25  # seconds of stepping
PROBE_MAX_S = 8.0
BACK_S = 2.0
WIN = 0.10  # a probe must be this much faster to take over (one sample against a mean)
SURPRISE = 3.0
ALPHA = 0.3  # weight of the newest step in the running estimate
STALE_S = 5.0  # an estimate older than this (by the clock) is not compared against
SETTLED = 4  # steps behind an estimate before a probe may beat it (a first step is often slow)
MAX_BUCKET = 12  # steps of 4,096 tokens and more are one bucket
IDLE_FOR_UP = 0.5  # idle CPUs (a mean since the last reading) that call a probe up
BUSY_BELOW = 0.25  # a reading under this many idle CPUs re-arms that call
DOWN, UP = 0, 1


@dataclass
class _Estimate:
    seconds: float
    at: float
    steps: int = 1


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
        self.stepped = 0.0  # seconds spent in steps: the waits' clock
        self.wait = [PROBE_MIN_S, PROBE_MIN_S]  # per direction, DOWN and UP
        self.next = [PROBE_MIN_S, PROBE_MIN_S]  # when (in self.stepped) each may probe
        self._est: dict[tuple[int, int], _Estimate] = {}
        self.switches = 0  # changes of the current count (a metric)
        self._idle_armed = False  # a busy reading was seen since the last idle-called probe
        # The latest change: (from, to, the probe's step seconds, the mean it beat), for a log line.
        self.last_switch: tuple[int, int, float, float] | None = None

    @property
    def adaptive(self) -> bool:
        return self.policy == "adaptive" and self.ceiling > 1

    def _neighbour(self, direction: int) -> int:
        step = max(1, self.current // 4)
        if direction == DOWN:
            return max(1, self.current - step)
        return min(self.ceiling, self.current + step)

    def note_idle(self, cpus: float) -> None:
        """Idle CPUs of the affinity since the last reading (read while below the ceiling)."""
        if not self.adaptive or self.current >= self.ceiling:
            return
        if cpus < BUSY_BELOW:
            self._idle_armed = True
        elif cpus >= IDLE_FOR_UP and self._idle_armed:
            self._idle_armed = False
            self.next[UP] = min(self.next[UP], self.stepped)

    def choose(self, tokens: int) -> int:
        if not self.adaptive:
            return self.current
        for direction in (DOWN, UP):
            n = self._neighbour(direction)
            if n != self.current and self.stepped >= self.next[direction]:
                return n
        return self.current

    def record(self, threads: int, tokens: int, seconds: float) -> None:
        if not self.adaptive:
            return
        now, b = self.clock(), bucket(tokens)
        self.stepped += seconds
        mine = self._fresh(self.current, b, now)
        recent = mine.seconds if mine is not None and mine.steps >= SETTLED else None
        if threads != self.current:  # a probe
            d = DOWN if threads < self.current else UP
            if recent is None:  # nothing settled to compare with: try again soon
                self.next[d] = self.stepped + PROBE_MIN_S
            elif seconds < recent * (1 - WIN):
                self.last_switch = (self.current, threads, seconds, recent)
                self.current = threads
                self._idle_armed = d == DOWN  # went down: CPUs were taken
                self.switches += 1
                self.wait[d] = PROBE_MIN_S  # keep going that way (a large machine)
                self.next[d] = self.stepped + PROBE_MIN_S
                back = 1 - d
                self.wait[back] = max(self.wait[back], BACK_S)
                self.next[back] = self.stepped + self.wait[back]
            else:
                self.wait[d] = min(self.wait[d] * 2, PROBE_MAX_S)
                self.next[d] = self.stepped + self.wait[d]
        elif recent is not None and seconds > SURPRISE * recent:
            self.next[DOWN] = self.stepped
        self._update(threads, b, seconds, now)

    def _fresh(self, threads: int, b: int, now: float) -> _Estimate | None:
        """The estimate of `threads` at size `b`, unless it is older than STALE_S."""
        e = self._est.get((threads, b))
        return e if e is not None and now - e.at < STALE_S else None

    def _update(self, threads: int, b: int, seconds: float, now: float) -> None:
        e = self._fresh(threads, b, now)
        if e is None:
            self._est[(threads, b)] = _Estimate(seconds, now)
        else:
            e.seconds += ALPHA * (seconds - e.seconds)
            e.at = now
            e.steps += 1
