"""The TensorRT-LLM engine's own logic, where it runs without TensorRT-LLM (which cannot be
installed here): what it refuses, the limits it reports, and how it reads a streamed result.

The streaming tests drive the engine with a fake of the one part of TensorRT-LLM's API it reads
per step, kept to what tensorrt_llm/executor/result.py does (checked against its source):
`GenerationResult` is its own async iterator, each `__anext__` handles one response and returns
the result itself, ending (StopAsyncIteration) once a final response was handled;
`_handle_sequence` sets `CompletionOutput._last_token_ids_len = len(token_ids)` and then
*extends* the cumulative `token_ids`, so `token_ids_diff` (`token_ids[_last_token_ids_len:]`)
is that response's ids; on a STOP_WORDS finish it cuts the stop ids off `token_ids` again;
`abort()` asks the executor to cancel, and a request aborted while still queued gets no
response at all (read from its source). Nothing else of tensorrt_llm is imitated."""

from __future__ import annotations

import asyncio

import pytest
from transformers import LlamaConfig

from toolwire.services.decode.config import DecodeConfig
from toolwire.services.decode.engine import EngineInfo, EngineRequest, EngineRequestError
from toolwire.services.decode.trtllm_engine import TrtllmEngine, model_limits, request_error


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
def test_the_embedded_model_is_for_the_batch_engine(model):
    with pytest.raises(SystemExit) as e:
        TrtllmEngine.from_config(DecodeConfig(model=model, engine="trtllm", max_batch=8))
    assert "Hugging Face checkpoint" in str(e.value) and "engine folder" in str(e.value)


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


class FakeCompletion:
    """CompletionOutput's fields the engine reads."""

    def __init__(self):
        self.token_ids: list[int] = []
        self._last_token_ids_len = 0
        self.finish_reason: str | None = None

    @property
    def token_ids_diff(self) -> list[int]:
        return self.token_ids[self._last_token_ids_len :]


class FakeResult:
    """GenerationResult as the engine uses it: responses (ids, finish) are fed by the test."""

    def __init__(self):
        self.outputs = [FakeCompletion()]
        self._done = False
        self.responses: asyncio.Queue = asyncio.Queue()
        self.aborts = 0
        self.steps = 0

    @property
    def finished(self) -> bool:
        return self._done

    def abort(self) -> None:
        self.aborts += 1  # a queued request: no response ever comes

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._done:
            raise StopAsyncIteration
        ids, finish, stop_words = await self.responses.get()
        if isinstance(ids, BaseException):
            raise ids
        self.steps += 1
        out = self.outputs[0]
        out._last_token_ids_len = len(out.token_ids)
        out.token_ids.extend(ids)
        if finish is not None:
            self._done = True
            out.finish_reason = finish
            if stop_words:
                out.token_ids = out.token_ids[: -len(stop_words)]
        return self


class FakeLLM:
    def __init__(self):
        self.results: list[FakeResult] = []

    def generate_async(self, inputs, sampling_params, streaming):
        assert streaming and inputs["prompt_token_ids"]
        self.results.append(FakeResult())
        return self.results[-1]


def _engine() -> tuple[TrtllmEngine, FakeLLM]:
    engine = TrtllmEngine("/models/none")
    engine.llm = FakeLLM()
    engine._SamplingParams = lambda **kw: kw
    engine._Guided = None
    engine.info = EngineInfo("trtllm", 4096, 32000, 8)
    return engine, engine.llm


async def _drain(stream, n=None):
    outs = []
    async for out in stream:
        outs.append(out)
        if n is not None and len(outs) == n:
            break
    return outs


def test_each_step_streams_its_delta_and_the_count_is_kept_as_it_goes():
    async def run():
        engine, llm = _engine()
        stream = engine.generate(EngineRequest("r", [1, 2], 8, stop_ids=[7]))
        first = asyncio.create_task(_drain(stream))
        await asyncio.sleep(0)
        res = llm.results[0]
        for ids in ([5], [6, 8], [9]):
            res.responses.put_nowait((ids, None, None))
        # TensorRT-LLM's STOP_WORDS finish: the stop id arrives, then is cut off token_ids.
        res.responses.put_nowait(([7], "stop", [7]))
        outs = await asyncio.wait_for(first, 5)
        return engine, res, outs

    engine, res, outs = asyncio.run(run())
    assert [t for o in outs for t in o.token_ids] == [5, 6, 8, 9]
    last = outs[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 2, 4)
    assert res.steps == 4 and res.aborts == 0 and engine.active_requests() == 0


def test_submit_pushes_every_step_to_the_sink_without_a_per_token_wait():
    class Sink:
        def __init__(self):
            self.outs, self.failed = [], None

        def put_nowait(self, out):
            self.outs.append(out)

        def fail(self, exc):
            self.failed = exc

    async def run():
        engine, llm = _engine()
        sink = Sink()
        await engine.submit(EngineRequest("r", [1], 3), sink)
        res = llm.results[0]
        for ids, fin in (([4], None), ([5], None), ([6], "length")):
            res.responses.put_nowait((ids, fin, None))
        for _ in range(20):
            await asyncio.sleep(0)
        return sink

    sink = asyncio.run(run())
    assert [o.token_ids for o in sink.outs] == [[4], [5], [6]]
    assert sink.outs[-1].finish_reason == "length" and sink.outs[-1].completion_tokens == 3
    assert sink.failed is None


def test_abort_of_a_queued_request_ends_it_though_no_response_comes():
    async def run():
        engine, llm = _engine()
        stream = engine.generate(EngineRequest("q", [1], 8))
        reader = asyncio.create_task(_drain(stream))
        await asyncio.sleep(0.01)
        assert await engine.abort("q")
        outs = await asyncio.wait_for(reader, 5)
        return engine, llm.results[0], outs

    engine, res, outs = asyncio.run(run())
    assert [o.finish_reason for o in outs] == ["abort"]
    assert res.aborts == 1 and engine.active_requests() == 0
    assert not asyncio.run(engine.abort("q"))  # unknown now


def test_closing_the_stream_aborts_the_request_in_tensorrt_llm():
    async def run():
        engine, llm = _engine()
        stream = engine.generate(EngineRequest("c", [1], 8))
        reader = asyncio.create_task(_drain(stream, n=1))
        await asyncio.sleep(0)
        llm.results[0].responses.put_nowait(([3], None, None))
        await asyncio.wait_for(reader, 5)
        await stream.aclose()
        await asyncio.sleep(0)
        return engine, llm.results[0]

    engine, res = asyncio.run(run())
    assert res.aborts == 1 and engine.active_requests() == 0


def test_a_constraint_refused_mid_stream_is_the_requests_fault():
    class RequestError(RuntimeError):  # tensorrt_llm.executor.utils.RequestError, by name
        pass

    async def run():
        engine, llm = _engine()
        stream = engine.generate(EngineRequest("g", [1], 8))
        reader = asyncio.create_task(_drain(stream))
        await asyncio.sleep(0)
        llm.results[0].responses.put_nowait(
            (RequestError("xgrammar failed to compile the grammar"), None, None)
        )
        return await asyncio.wait_for(reader, 5)

    with pytest.raises(EngineRequestError) as e:
        asyncio.run(run())
    assert e.value.param == "constraint"
