"""The step's thread policy decides from the step times it is given: a simulated machine (a
cost per thread count, a clock that advances by each step's time), no timing of real work."""

from __future__ import annotations

import pytest

from services.decode import step_threads
from services.decode.step_threads import StepThreads


class Machine:
    """A clock, and a step whose time is `cost(threads, tokens)`; `run` steps the policy."""

    def __init__(self, cost):
        self.now = 0.0
        self.cost = cost
        self.counts: list[int] = []

    def clock(self) -> float:
        return self.now

    def run(self, policy: StepThreads, seconds: float, tokens: int = 1) -> list[int]:
        counts = []
        end = self.now + seconds
        while self.now < end:
            n = policy.choose(tokens)
            took = self.cost(n, tokens)
            self.now += took
            policy.record(n, tokens, took)
            counts.append(n)
        self.counts += counts
        return counts


def quiet(n: int, tokens: int) -> float:
    return 0.010 * tokens**0.5 / n**0.8  # every thread helps


def one_neighbour(n: int, tokens: int) -> float:
    # Two threads beside one busy process on two cores: every barrier waits out a time slice.
    return 0.015 * tokens**0.5 if n == 1 else 0.250


def test_quiet_machine_keeps_every_cpu_and_probes_rarely():
    m = Machine(quiet)
    policy = StepThreads(2, clock=m.clock)
    counts = m.run(policy, 120.0)
    assert policy.current == 2 and policy.switches == 0
    probes = counts.count(1)
    # Losing probes back off to one every PROBE_MAX_S.
    assert probes <= 120.0 / step_threads.PROBE_MAX_S + 8
    assert probes / len(counts) < 0.002


def test_a_neighbour_starting_moves_to_one_thread_within_a_few_steps():
    m = Machine(quiet)
    policy = StepThreads(2, clock=m.clock)
    m.run(policy, 30.0)  # long enough for the probes to have backed off to their longest wait
    m.cost = one_neighbour
    first = m.run(policy, 0.8)
    assert policy.current == 1
    # The first slow step is a surprise: the next step is the probe that wins.
    assert first[:3].count(2) <= 2
    later = m.run(policy, 60.0)
    slow_time = later.count(2) * 0.250
    assert slow_time / 60.0 < 0.1  # probes upward cost under a tenth of the time


def test_the_neighbour_leaving_gives_the_threads_back():
    m = Machine(one_neighbour)
    policy = StepThreads(2, clock=m.clock)
    m.run(policy, 30.0)
    assert policy.current == 1
    m.cost = quiet
    m.run(policy, step_threads.PROBE_MAX_S + 1.0)
    assert policy.current == 2


def test_fixed_policy_and_one_cpu_never_change_the_count():
    m = Machine(one_neighbour)
    fixed = StepThreads(2, "fixed", clock=m.clock)
    assert set(m.run(fixed, 5.0)) == {2}
    single = StepThreads(1, clock=m.clock)
    assert set(m.run(single, 5.0)) == {1}
    assert not single.adaptive


def test_a_probe_is_compared_only_with_steps_of_its_size():
    m = Machine(quiet)
    policy = StepThreads(2, clock=m.clock)
    while policy.choose(512) == 2:  # one-token steps until a probe is due
        m.run(policy, 0.001, tokens=1)
    # A 512-token step at 1 thread is slower than the one-token steps at 2, but it is not
    # compared with them: there is no estimate of 2 threads at this size yet.
    policy.record(1, 512, quiet(1, 512))
    assert policy.current == 2 and policy.switches == 0


def test_noisy_one_thread_steps_beside_two_neighbours_do_not_call_probes_up():
    import random

    rng = random.Random(7)

    def two_neighbours(n: int, tokens: int) -> float:
        # Three runnable threads on two cores: a one-thread step is sometimes preempted
        # (3x and more), a two-thread step always waits out time slices.
        return 0.015 * rng.choice([1, 1, 1, 3, 4]) if n == 1 else 0.300

    m = Machine(two_neighbours)
    policy = StepThreads(2, clock=m.clock)
    counts = m.run(policy, 120.0)
    assert policy.current == 1
    assert counts.count(2) * 0.300 / 120.0 < 0.05


def test_idle_time_does_not_bring_probes_sooner():
    m = Machine(quiet)
    policy = StepThreads(2, clock=m.clock)
    probes = steps = 0
    for _ in range(200):  # short requests, ten seconds apart
        counts = m.run(policy, 0.1)
        probes += counts.count(1)
        steps += len(counts)
        m.now += 10.0
    stepped = 200 * 0.1
    assert probes <= stepped / step_threads.PROBE_MAX_S + 8


def test_many_cpus_climb_down_to_the_fastest_count():
    def five_free(n: int, tokens: int) -> float:
        # Eight CPUs, three taken: past five threads each extra one waits out time slices.
        return 0.004 * 8 / min(n, 5) + (0.05 * (n - 5) if n > 5 else 0.0)

    m = Machine(five_free)
    policy = StepThreads(8, clock=m.clock)
    m.run(policy, 60.0)
    assert policy.current == 5


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="thread policy"):
        StepThreads(2, "spin")


def test_the_first_slow_steps_of_a_size_do_not_lose_the_threads():
    seen: dict = {}

    def cold_then_quiet(n: int, tokens: int) -> float:
        # The first two steps of each size at the start's count are slow (pages, caches).
        key = (n, step_threads.bucket(tokens))
        seen[key] = seen.get(key, 0) + 1
        return quiet(n, tokens) * (6 if n == 2 and seen[key] <= 2 else 1)

    m = Machine(cold_then_quiet)
    policy = StepThreads(2, clock=m.clock)
    for size in (40, 100, 300, 1000):  # requests of new sizes: a prompt, then one-token steps
        for _ in range(3):
            m.run(policy, 0.0001, tokens=size)
            m.run(policy, 0.3, tokens=1)
    assert policy.switches == 0 and policy.current == 2


def test_idle_cpus_bring_the_threads_back_at_once_and_a_quota_host_probes_once():
    m = Machine(one_neighbour)
    policy = StepThreads(2, clock=m.clock)
    m.run(policy, 30.0)
    assert policy.current == 1
    policy.note_idle(0.0)  # the neighbour still runs
    assert policy.choose(1) == 1
    m.cost = quiet  # it has gone: the other CPU is idle
    policy.note_idle(1.0)
    assert policy.choose(1) == 2  # a probe up at once, not after the wait
    m.run(policy, 0.05)
    assert policy.current == 2

    # Idle CPUs the process may not use (a host's, under a quota): each reading says idle, each
    # probe up loses; only the first reading after a busy one calls a probe.
    m = Machine(one_neighbour)
    policy = StepThreads(2, clock=m.clock)
    m.run(policy, 30.0)
    called = 0
    for _ in range(50):
        policy.note_idle(1.0)
        if policy.choose(1) == 2:
            called += 1
        m.run(policy, 0.2)
    assert called <= 1 + 50 * 0.2 / step_threads.PROBE_MAX_S + 1
