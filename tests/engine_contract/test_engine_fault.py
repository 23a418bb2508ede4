"""A fault in the torch engine's step loop (outside any one request) must not leave streams or
later requests hanging: the running requests end (abort), later ones are refused at once
(EngineBusy: the gateway tries another replica), and wait_fault() returns so that the decode
service exits for its supervisor to restart it. The fault is injected into a real engine's step."""

from __future__ import annotations

import asyncio

import pytest

from toolwire.services.decode.batch_engine import BatchEngine
from toolwire.services.decode.engine import EngineBusy, EngineRequest


def test_a_failed_step_loop_ends_its_streams_and_refuses_new_requests():
    loop = asyncio.new_event_loop()
    engine = BatchEngine("embedded", max_batch=2)
    loop.run_until_complete(engine.start())

    def broken(decode, prefill):
        raise RuntimeError("injected step fault")

    engine.step.forward = broken

    async def run():
        outs = [o async for o in engine.generate(EngineRequest("r1", [1, 2, 3], 4))]
        assert outs[-1].finish_reason == "abort"
        fault = await asyncio.wait_for(engine.wait_fault(), 30)
        assert "injected step fault" in str(fault)
        with pytest.raises(EngineBusy):
            await anext(engine.generate(EngineRequest("r2", [1, 2, 3], 4)))

    try:
        loop.run_until_complete(asyncio.wait_for(run(), 60))
    finally:
        loop.run_until_complete(engine.stop())
        loop.close()
