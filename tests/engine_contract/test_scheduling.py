"""The torch engine's scheduler: prompts prefilled in small chunks beside running streams,
sequences joining and leaving (their cache rows moved to keep the decode rows together), more
requests than slots. Each request must decode exactly what it decodes alone, on both steps (the
torch step in fp32; ggml's CPU kernels give a row the same bits whatever shares its batch)."""

from __future__ import annotations

import asyncio

import pytest

from toolwire.services.decode.batch_engine import BatchEngine
from toolwire.services.decode.engine import EngineRequest


@pytest.fixture(scope="module", params=["ggml", "torch"])
def small_engine(request):
    loop = asyncio.new_event_loop()
    engine = BatchEngine(
        "embedded", dtype="fp32", max_batch=3, prefill_chunk=16, step=request.param
    )
    loop.run_until_complete(engine.start())
    engine.loop = loop
    yield engine
    loop.run_until_complete(engine.stop())
    loop.close()


def prompt(tokenizer, text):
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


async def tokens(engine, rid, ids, max_tokens):
    out = []
    async for o in engine.generate(EngineRequest(rid, ids, max_tokens, temperature=0.0)):
        out.extend(o.token_ids)
    return out


def test_interleaved_requests_decode_as_they_do_alone(small_engine, tokenizer):
    texts = [
        "Hi.",
        "Tell me a long story about a lighthouse keeper and the sea.",
        "What is 2 + 2?",
        "List the planets of the solar system, one per line, with a "
        "short note on each of them and why it is interesting.",
        "Say yes.",
        "Write a haiku about autumn leaves.",
    ]
    lengths = [5, 19, 3, 14, 8, 11]  # different ends: rows leave the batch at different steps
    prompts = [prompt(tokenizer, t) for t in texts]
    run = small_engine.loop.run_until_complete
    alone = [
        run(tokens(small_engine, f"alone-{i}", p, n))
        for i, (p, n) in enumerate(zip(prompts, lengths))
    ]

    async def together():
        return await asyncio.gather(
            *(
                tokens(small_engine, f"together-{i}", p, n)
                for i, (p, n) in enumerate(zip(prompts, lengths))
            )
        )

    assert run(together()) == alone
    assert small_engine.active_requests() == 0


def test_the_null_engine_queues_beyond_its_slots_and_each_request_ends_as_alone():
    """More requests than slots on the null engine (`--model null`): queued ones start as
    slots free; each ends on its own max_tokens with what it gives alone."""
    from toolwire.services.decode.null_engine import NullEngine

    async def scenario():
        engine = NullEngine(max_batch=2)
        await engine.start()
        try:
            lengths = [3, 9, 1, 6, 4]
            alone = [
                await tokens(engine, f"alone-{i}", [1, 2, 3], n) for i, n in enumerate(lengths)
            ]
            together = await asyncio.gather(
                *(tokens(engine, f"together-{i}", [1, 2, 3], n) for i, n in enumerate(lengths))
            )
            return lengths, alone, together, engine.active_requests()
        finally:
            await engine.stop()

    lengths, alone, together, active = asyncio.run(scenario())
    assert together == alone and [len(t) for t in alone] == lengths and active == 0
