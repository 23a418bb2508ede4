"""The stream interval, where it is held (services/decode/generate_stream.py): a request's tokens wait in
its sink until N have gathered or its deadline passes; the first token and the finish never
wait; with the interval off every step's tokens go to the next frame."""

from __future__ import annotations

import asyncio

from toolwire.services.decode.engine import EngineOutput
from toolwire.services.decode.generate_stream import ServedGenerateStream, _Sink


def _frames(mux: ServedGenerateStream) -> list[list[int]]:
    frame = mux.take()
    return [] if frame is None else [list(frame.token_ids)]


def test_tokens_are_held_until_n_but_the_first_and_the_finish_are_not():
    async def run():
        mux = ServedGenerateStream(engine=None, max_queue=0)
        sink = _Sink(mux, 1, every=4, delay=60.0)
        mux.live[1] = "r"
        seen = []
        for t in range(1, 6):  # 1 goes at once; 2..5 wait until four have gathered
            sink.put_nowait(EngineOutput([t]))
            seen.append(_frames(mux))
        sink.put_nowait(EngineOutput([6]))  # held
        seen.append(_frames(mux))
        sink.put_nowait(EngineOutput([7], "length", 3, 7))  # the finish takes what is held
        frame = mux.take()
        return seen, list(frame.token_ids), frame.finishes[0].complete.finish_reason, mux

    seen, last, reason, mux = asyncio.run(run())
    assert seen == [[[1]], [], [], [], [[2, 3, 4, 5]], []]
    assert last == [6, 7] and reason == "length"
    assert not mux.holding and 1 not in mux.live
    if mux.timer is not None:
        mux.timer.cancel()


def test_a_held_token_leaves_at_its_deadline_without_another_step():
    async def run():
        mux = ServedGenerateStream(engine=None, max_queue=0)
        sink = _Sink(mux, 1, every=8, delay=0.02)
        sink.put_nowait(EngineOutput([1]))
        mux.take()
        sink.put_nowait(EngineOutput([2]))
        mux.ready.clear()
        assert mux.take() is None  # held
        await asyncio.wait_for(mux.ready.wait(), 1)  # the timer, not a step, wakes the writer
        return list(mux.take().token_ids), mux

    ids, mux = asyncio.run(run())
    assert ids == [2] and not mux.holding and mux.timer is None


def test_with_the_interval_off_each_step_goes_to_the_next_frame():
    async def run():
        mux = ServedGenerateStream(engine=None, max_queue=0)
        sink = _Sink(mux, 1)
        out = []
        for t in range(3):
            sink.put_nowait(EngineOutput([t]))
            out.append(_frames(mux))
        return out, mux

    out, mux = asyncio.run(run())
    assert out == [[[0]], [[1]], [[2]]] and mux.timer is None
