"""GgmlStep's cache operations against a plain prefill: a moved, copied, saved-and-loaded or
reused slot gives the bits a fresh prefill of the same tokens gives. The engine's prefix reuse
and slot compaction rest on these (llama.cpp's sequence copy, removal and state save/load)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from toolwire.runtime import model_source
from toolwire.services.decode.steps import Span
from toolwire.services.decode.steps.ggml import GgmlStep

PROMPT = list(range(200, 260))
TAIL = 16


@pytest.fixture(scope="module")
def step():
    src = model_source.resolve("embedded")
    s = GgmlStep(pathlib.Path(src.folder, src.gguf_file), 6, kv_tokens=2048, n_batch=64)
    yield s
    s.close()


def fresh(step, slot):
    return step.forward([], [Span(slot, PROMPT, 0)])[0]


def tail(step, slot):
    n = len(PROMPT) - TAIL
    return step.forward([], [Span(slot, PROMPT[n:], n)])[0]


def test_copied_saved_loaded_and_moved_prefixes_give_a_fresh_prefills_logits(step):
    want = fresh(step, 0)
    n = len(PROMPT) - TAIL
    step.copy_prefix(0, 1, n)
    assert np.array_equal(tail(step, 1), want)
    saved, nbytes = step.save(0, len(PROMPT))
    assert nbytes == len(saved) > 0
    step.load(2, saved, n)
    assert np.array_equal(tail(step, 2), want)
    step.move(2, 3, len(PROMPT))
    assert np.array_equal(
        step.forward([Span(3, [5], len(PROMPT))], [])[0],
        step.forward([Span(0, [5], len(PROMPT))], [])[0],
    )
    for slot in range(4):
        step.release(slot)


def test_a_reused_slot_drops_what_it_held(step):
    """A slot given to a new request still holds the old one's cells until it prefills from 0."""
    step.forward([], [Span(4, list(range(300, 380)), 0)])
    assert np.array_equal(fresh(step, 4), fresh(step, 5))
    step.release(4)
    step.release(5)


def test_a_batch_longer_than_n_batch_is_split(step):
    """Spans over n_batch tokens in all (64 here) go to llama.cpp in several calls; rows stay in
    order."""
    long = list(range(1000, 1000 + step.n_batch + 40))
    both = step.forward([], [Span(0, PROMPT, 0), Span(1, long, 0)])
    assert np.array_equal(both[0], fresh(step, 2))
    assert np.array_equal(both[1], step.forward([], [Span(3, long, 0)])[0])
    for slot in range(4):
        step.release(slot)


def test_a_full_kv_pool_aborts_what_holds_it_and_the_engine_serves_on():
    """The ggml step's sequences share one pool of --kv-tokens cells (the torch step reserves
    each slot's room): when they outgrow it the step's requests end with abort, no hang, and
    the next request runs."""
    import asyncio

    from toolwire.services.decode.batch_engine import BatchEngine
    from toolwire.services.decode.engine import EngineRequest

    async def scenario():
        engine = BatchEngine("embedded", max_batch=2, kv_tokens=256, step="ggml")
        await engine.start()
        try:

            async def run(rid, n):
                outs = [
                    o async for o in engine.generate(EngineRequest(rid, PROMPT, n, temperature=0.0))
                ]
                return outs[-1].finish_reason

            both = await asyncio.gather(run("a", 190), run("b", 190))
            after = await run("c", 5)
            return both, after, engine.active_requests()
        finally:
            await engine.stop()

    both, after, active = asyncio.run(scenario())
    assert both == ["abort", "abort"] and after == "length" and active == 0
