"""bench/contend.py: its neighbours end with the block (and at their bound if the bench dies),
and its table holds each server against its own quiet figure and llama-server's."""

import os
import time

from bench import contend


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for the CPU
        return f.read().split()[2] != "Z"


def test_neighbours_run_inside_the_block_only():
    with contend.Neighbours(2, bound_s=30) as n:
        pids = [p.pid for p in n.procs]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)


def test_a_neighbour_never_outlives_its_bound():
    n = contend.Neighbours(1, bound_s=1).__enter__()  # never exited, as if the bench died
    proc = n.procs[0]
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is not None


def test_table_gives_fractions_of_quiet_and_ratios_to_llama_server():
    def row(quiet, one, two):
        return {"0/1": {"tok_s": quiet}, "1/1": {"tok_s": one}, "2/1": {"tok_s": two}}

    res = {"llama-server": row(100.0, 20.0, 10.0), "toolwire adaptive": row(90.0, 60.0, None)}
    text = contend.table(res, [0, 1, 2], [1])
    assert "| 1 | toolwire adaptive | 90.0 | 60.0 (0.67x) | cut |" in text
    assert "| 1 | llama-server | 100.0 | 20.0 (0.20x) | 10.0 (0.10x) |" in text
    assert "| 1 | toolwire adaptive | 0.90 | 3.00 | - |" in text
