"""The TensorRT-LLM engine's own logic, where it runs without TensorRT-LLM (which cannot be
installed here): what it refuses, and the limits it reports. Nothing here imports or imitates
tensorrt_llm; the engine is exercised only up to where it would call it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from transformers import LlamaConfig

from toolwire.services.decode.engine import EngineRequest, EngineRequestError
from toolwire.services.decode.trtllm_engine import TrtllmEngine, model_limits


def test_a_per_request_seed_is_refused_not_ignored():
    engine = TrtllmEngine("/models/none")
    request = EngineRequest("r1", [1, 2, 3], 8, seed=7)

    async def first():
        return await anext(engine.generate(request))

    with pytest.raises(EngineRequestError) as e:
        asyncio.run(first())
    assert e.value.param == "seed"


def test_limits_come_from_the_checkpoint_config(tmp_path):
    LlamaConfig(max_position_embeddings=4096, vocab_size=32064, hidden_size=64,
                intermediate_size=128, num_hidden_layers=1,
                num_attention_heads=2).save_pretrained(tmp_path)
    assert model_limits(str(tmp_path), None) == (4096, 32064)  # padded vocab, not the tokenizer's
    assert model_limits(str(tmp_path), 2048) == (2048, 32064)
    assert model_limits(str(tmp_path), 10_000) == (4096, 32064)


@pytest.mark.parametrize("model", ["embedded", "random:tiny"])
def test_the_embedded_model_is_for_the_torch_engine(model):
    args = SimpleNamespace(model=model, tensor_parallel_size=1, max_batch=8,
                           kv_cache_fraction=0.8, max_model_len=None)
    with pytest.raises(SystemExit) as e:
        TrtllmEngine.from_args(args)
    assert "Hugging Face checkpoint" in str(e.value) and "engine folder" in str(e.value)
