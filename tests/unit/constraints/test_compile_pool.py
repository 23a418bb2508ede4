"""The template service's compile workers: spawned before the tokenizer is loaded (their imports
overlap the service's start), handed its info at start(), and replaced, info and all, when a
compile passes the deadline. Real worker processes and real xgrammar."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib

import pytest

from toolwire.constraints import pool as pool_module
from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.dialects import STRUCTURAL_TAG
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.constraints.outcome import Outcome
from toolwire.constraints.pool import CompilePool
from toolwire.runtime import model_source

SIMPLE = Constraint(Kind.JSON_SCHEMA, json.dumps({"type": "object", "properties": {}}))
# Sixty properties with bounded-repetition patterns: seconds of xgrammar compile on a real vocab.
SLOW = Constraint(
    Kind.JSON_SCHEMA,
    json.dumps(
        {
            "type": "object",
            "required": [f"p{i}" for i in range(60)],
            "properties": {
                f"p{i}": {"type": "string", "pattern": "[a-z]{1,30}@[a-z]{1,30}"} for i in range(60)
            },
        }
    ),
)


@pytest.fixture(scope="module")
def info() -> str:
    """The embedded tokenizer's info, as the template service hands it to its workers."""
    tokenizer = model_source.load_tokenizer(model_source.resolve("embedded"))
    return xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=49152).serialize_json()


def test_workers_spawned_early_take_the_info_at_start_and_are_replaced_with_it(info):

    async def run():
        pool = CompilePool(workers=1, timeout_s=0.5)
        pool.spawn()  # no info yet: the worker imports xgrammar meanwhile
        await pool.start(info)
        try:
            first = await pool.check(SIMPLE, STRUCTURAL_TAG)
            slow = await pool.check(SLOW, STRUCTURAL_TAG)
            other = Constraint(Kind.JSON_SCHEMA, json.dumps({"type": "string"}))
            # The stuck worker is killed and a new one started: the next compile waits for it.
            return first, slow, await asyncio.wait_for(pool.check(other, STRUCTURAL_TAG), 60)
        finally:
            pool.close()

    first, slow, replaced = asyncio.run(run())
    assert first.outcome is Outcome.OK
    assert slow.outcome is Outcome.TIMEOUT
    assert replaced.outcome is Outcome.OK  # the new worker got the tokenizer's info too


def workers() -> int:
    """This process's children that are compile workers (from /proc)."""
    found = 0
    for d in pathlib.Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            found += ppid == os.getpid() and b"compile_worker" in (d / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone
    return found


def test_one_worker_runs_more_start_while_all_are_busy_and_exit_when_unused(monkeypatch, info):
    """A slow compile holds the one worker: the next compile starts a second and is answered
    before the slow one ends; a window with one compile at a time retires the second."""
    monkeypatch.setattr(pool_module, "RETIRE_S", 1.0)

    async def run():
        pool = CompilePool(workers=2, timeout_s=30)
        await pool.start(info)
        try:
            alone = (pool.running, workers())
            slow = asyncio.ensure_future(pool.check(SLOW, STRUCTURAL_TAG))
            await asyncio.sleep(0.2)  # the slow compile has the first worker
            quick = await asyncio.wait_for(pool.check(SIMPLE, STRUCTURAL_TAG), 20)
            beside = (slow.done(), pool.running, workers())
            await slow
            third = Constraint(Kind.JSON_SCHEMA, json.dumps({"type": "integer"}))
            await pool.check(third, STRUCTURAL_TAG)  # one at a time: the second was not needed
            await asyncio.sleep(2.5)  # the burst's window, then a window of one at a time
            return alone, quick, beside, (pool.running, workers())
        finally:
            pool.close()

    alone, quick, beside, after = asyncio.run(run())
    assert alone == (1, 1)
    assert quick.outcome is Outcome.OK
    assert beside == (False, 2, 2)  # answered by a second worker while the slow one compiled
    assert after == (1, 1)


def test_a_pool_of_one_never_grows(info):

    async def run():
        pool = CompilePool(workers=1, timeout_s=30)
        await pool.start(info)
        try:
            both = [pool.check(SLOW, STRUCTURAL_TAG), pool.check(SIMPLE, STRUCTURAL_TAG)]
            results = await asyncio.wait_for(asyncio.gather(*both), 60)
            return results, pool.running
        finally:
            pool.close()

    (slow, simple), running = asyncio.run(run())
    assert slow.outcome is Outcome.OK and simple.outcome is Outcome.OK
    assert running == 1


def test_compiles_waiting_when_no_worker_will_start_fail_and_the_next_tries_again(
    monkeypatch, info
):
    """The one worker is killed at the deadline and its replacement will not start: the compile
    waiting behind it is answered UNAVAILABLE (the template's 503) instead of waiting forever,
    the answer is not cached, and a later compile starts a worker again."""
    real = pool_module._Process

    class WontStart(real):
        def configure(self, info_json):
            self.kill()
            raise RuntimeError("the grammar worker did not start")

    async def run():
        pool = CompilePool(workers=1, timeout_s=0.5)
        await pool.start(info)
        try:
            slow = asyncio.ensure_future(pool.check(SLOW, STRUCTURAL_TAG))
            await asyncio.sleep(0.1)  # the slow compile has the one worker
            monkeypatch.setattr(pool_module, "_Process", WontStart)
            waiting = await asyncio.wait_for(pool.check(SIMPLE, STRUCTURAL_TAG), 30)
            timed_out, left = await slow, pool.running
            monkeypatch.setattr(pool_module, "_Process", real)
            again = await asyncio.wait_for(pool.check(SIMPLE, STRUCTURAL_TAG), 60)
            return timed_out, waiting, left, again, pool.running
        finally:
            pool.close()

    timed_out, waiting, left, again, running = asyncio.run(run())
    assert timed_out.outcome is Outcome.TIMEOUT
    assert waiting.outcome is Outcome.UNAVAILABLE
    assert left == 0
    assert again.outcome is Outcome.OK and running == 1
