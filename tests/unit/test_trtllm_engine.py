"""The TensorRT-LLM engine's own logic, where it runs without TensorRT-LLM (which cannot be
installed here): what it refuses, and the limits it reports. Nothing here imports or imitates
tensorrt_llm; the engine is exercised only up to where it would call it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from transformers import LlamaConfig

from toolwire.services.decode.engine import EngineRequest, EngineRequestError
from toolwire.services.decode.trtllm_engine import (
    TrtllmEngine,
    model_limits,
    next_or_aborted,
    request_error,
)


def test_a_per_request_seed_is_refused_not_ignored():
    engine = TrtllmEngine("/models/none")
    request = EngineRequest("r1", [1, 2, 3], 8, seed=7)

    async def first():
        return await anext(engine.generate(request))

    with pytest.raises(EngineRequestError) as e:
        asyncio.run(first())
    assert e.value.param == "seed"


def test_limits_come_from_the_checkpoint_config(tmp_path):
    LlamaConfig(
        max_position_embeddings=4096,
        vocab_size=32064,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
    ).save_pretrained(tmp_path)
    assert model_limits(str(tmp_path), None) == (4096, 32064)  # padded vocab, not the tokenizer's
    assert model_limits(str(tmp_path), 2048) == (2048, 32064)
    assert model_limits(str(tmp_path), 10_000) == (4096, 32064)


@pytest.mark.parametrize("model", ["embedded", "random:tiny"])
def test_the_embedded_model_is_for_the_torch_engine(model):
    args = SimpleNamespace(
        model=model, tensor_parallel_size=1, max_batch=8, kv_cache_fraction=0.8, max_model_len=None
    )
    with pytest.raises(SystemExit) as e:
        TrtllmEngine.from_args(args)
    assert "Hugging Face checkpoint" in str(e.value) and "engine folder" in str(e.value)


def test_waiting_for_results_ends_when_the_request_is_aborted():
    async def silent():  # a request that never gets another response
        await asyncio.Event().wait()
        yield None

    async def run():
        aborted = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, aborted.set)
        return await asyncio.wait_for(next_or_aborted(silent(), aborted), 5)

    assert asyncio.run(run()) is None


def test_results_pass_through_until_the_end():
    async def two():
        yield "a"
        yield "b"

    async def run():
        it, aborted, got = two(), asyncio.Event(), []
        while True:
            try:
                got.append(await next_or_aborted(it, aborted))
            except StopAsyncIteration:
                return got

    assert asyncio.run(run()) == ["a", "b"]


def test_errors_that_are_the_requests_fault_are_400s():
    # The mapping only: TensorRT-LLM raises its RequestError (tensorrt_llm/executor/utils.py)
    # from the result iterator; it is matched by name, as the engine never imports it here.
    class RequestError(RuntimeError):
        pass

    grammar = request_error(RequestError("Failed to compile the guided decoding grammar"))
    assert grammar is not None and grammar.param == "constraint"
    too_long = request_error(
        ValueError("The sum of prompt length (9000) should not exceed max_num_tokens (8192)")
    )
    assert too_long is not None and too_long.param == "messages"
    # Other releases raise the same check as a RequestError (llmapi/llm.py _check_arguments).
    too_long = request_error(
        RequestError(
            "The sum of prompt length (9000.0), query length (0) "
            "should not exceed max_num_tokens (8192)"
        )
    )
    assert too_long is not None and too_long.param == "messages"
    assert request_error(RequestError("executor worker died")) is None  # a real fault: 500
    assert request_error(RuntimeError("CUDA error")) is None
