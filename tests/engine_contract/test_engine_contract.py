"""The contract every decode engine keeps, run against each engine that can run here.

torch runs everywhere, on both of its steps (ggml, the CPU default for a GGUF, and torch); trtllm runs where TensorRT-LLM imports (a GPU machine) and is skipped,
with the reason, elsewhere. Set TOOLWIRE_TRTLLM_MODEL to a checkpoint folder to run it.
null (`--model null`, no forward pass) keeps all of it too: its fixed cycle of tokens ends on
the request's stop ids and max_tokens, and its constrained output is valid (it takes allowed
tokens only); what it says is not meant to be useful, which no test here asks of it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os

import jsonschema
import pytest

from toolwire.constraints.compiler import in_dialect
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.services.decode.engine import EngineRequest

ENGINES = [
    "ggml",  # the torch engine's scheduler on the ggml step: the CPU default for a GGUF
    "torch",  # the same scheduler on the torch step (--step torch)
    "null",
    pytest.param(
        "trtllm",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("tensorrt_llm") is None
            or not os.environ.get("TOOLWIRE_TRTLLM_MODEL"),
            reason="TensorRT-LLM is not installed here (no GPU); set TOOLWIRE_TRTLLM_MODEL on a "
            "GPU machine to run the contract against it",
        ),
    ),
]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    if request.param == "ggml":
        engine = request.getfixturevalue("torch_engine")
        assert type(engine.step).__name__ == "GgmlStep"
        yield engine
        return
    if request.param == "torch":
        engine = request.getfixturevalue("torch_step_engine")
        assert type(engine.step).__name__ == "TorchLlamaStep"
        yield engine
        return
    if request.param == "null":
        from toolwire.services.decode.null_engine import NullEngine

        loop = asyncio.new_event_loop()
        eng = NullEngine(max_batch=16)
        loop.run_until_complete(eng.start())
        eng.loop = loop
        yield eng
        loop.run_until_complete(eng.stop())
        loop.close()
        return
    from toolwire.services.decode.trtllm_engine import TrtllmEngine

    loop = asyncio.new_event_loop()
    eng = TrtllmEngine(os.environ["TOOLWIRE_TRTLLM_MODEL"], max_batch=16)
    loop.run_until_complete(eng.start())
    eng.loop = loop
    yield eng
    loop.run_until_complete(eng.stop())
    loop.close()


@pytest.fixture(scope="module")
def prompt(tokenizer):
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}],
        add_generation_prompt=True,
        tokenize=True,
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def run(engine, coro):
    return engine.loop.run_until_complete(coro)


async def collect(engine, req, stop_after=None):
    outs = []
    async for out in engine.generate(req):
        outs.append(out)
        if stop_after is not None and len(outs) >= stop_after:
            break
    return outs


def _in(engine, kind: str, text: str) -> Constraint:
    """The constraint as the template service would send it to this engine (its dialect)."""
    return in_dialect(Constraint(Kind(kind), text), engine.info.constraint_dialect)


def req(rid, prompt, **kw):
    kw.setdefault("temperature", 0.0)
    kw.setdefault("max_tokens", 16)
    return EngineRequest(rid, prompt, **kw)


def _ids(outs):
    return [t for o in outs for t in o.token_ids]


def test_streams_only_new_ids_and_counts_them(engine, prompt, tokenizer):
    outs = run(engine, collect(engine, req("new-ids", prompt, stop_ids=[2])))
    last = outs[-1]
    assert last.finish_reason in ("stop", "length")
    assert all(o.finish_reason is None for o in outs[:-1])
    assert last.prompt_tokens == len(prompt)
    assert last.completion_tokens == len(_ids(outs)) > 0
    assert tokenizer.decode(_ids(outs)) not in tokenizer.decode(prompt)


def test_max_tokens_gives_length(engine, prompt):
    outs = run(engine, collect(engine, req("length", prompt, max_tokens=5)))
    assert outs[-1].finish_reason == "length"
    assert len(_ids(outs)) == outs[-1].completion_tokens == 5


def test_stop_token_ids_end_the_sequence(engine, prompt):
    free = _ids(run(engine, collect(engine, req("free", prompt, max_tokens=6))))
    stop_at = free[3]
    if stop_at in free[:3]:
        pytest.skip("the greedy output repeats its 4th token earlier")
    outs = run(engine, collect(engine, req("stopped", prompt, max_tokens=6, stop_ids=[stop_at])))
    assert outs[-1].finish_reason == "stop"
    assert _ids(outs) == free[:3]  # the stop token itself is not streamed


def _seed(engine, n: int) -> int | None:
    """A seed where the engine honours one; the trtllm engine refuses per-request seeds (the
    null engine ignores them: its output does not depend on sampling)."""
    return n if engine.info.name in ("batch", "null") else None


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_json_schema_constraint_is_obeyed(engine, prompt, tokenizer):
    outs = run(
        engine,
        collect(
            engine,
            req(
                "json",
                prompt,
                max_tokens=60,
                stop_ids=[2],
                temperature=1.0,
                seed=_seed(engine, 3),
                constraint=_in(engine, "json_schema", json.dumps(SCHEMA)),
            ),
        ),
    )
    assert outs[-1].finish_reason == "stop"
    jsonschema.validate(json.loads(tokenizer.decode(_ids(outs))), SCHEMA)


def test_structural_tag_constraint_is_obeyed(engine, prompt, tokenizer):
    tag = {
        "type": "structural_tag",
        "format": {
            "type": "tags_with_separator",
            "separator": "\n",
            "at_least_one": True,
            "stop_after_first": True,
            "tags": [
                {
                    "type": "tag",
                    "begin": "<call>",
                    "end": "</call>",
                    "content": {"type": "json_schema", "json_schema": SCHEMA},
                }
            ],
        },
    }
    outs = run(
        engine,
        collect(
            engine,
            req(
                "tag",
                prompt,
                max_tokens=60,
                stop_ids=[2],
                constraint=_in(engine, "structural_tag", json.dumps(tag)),
            ),
        ),
    )
    text = tokenizer.decode(_ids(outs))
    assert outs[-1].finish_reason == "stop"
    assert text.startswith("<call>") and text.endswith("</call>")
    jsonschema.validate(json.loads(text[len("<call>") : -len("</call>")]), SCHEMA)


def test_abort_mid_generation_frees_the_slot(engine, prompt):
    async def scenario():
        outs = []
        async for out in engine.generate(req("abort-me", prompt, max_tokens=500)):
            outs.append(out)
            if len(outs) == 3:
                assert await engine.abort("abort-me")
        return outs

    outs = run(engine, scenario())
    assert outs[-1].finish_reason == "abort"
    assert engine.active_requests() == 0


def test_closing_the_stream_frees_the_slot(engine, prompt):
    run(engine, collect(engine, req("leave", prompt, max_tokens=500), stop_after=2))

    async def settle():
        for _ in range(100):
            if engine.active_requests() == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    assert run(engine, settle())


def test_concurrent_requests_each_keep_their_own_constraint(engine, prompt, tokenizer):
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

    async def one(i, word):
        schema = {
            "type": "object",
            "properties": {"w": {"const": word}},
            "required": ["w"],
            "additionalProperties": False,
        }
        return await collect(
            engine,
            req(
                f"c{i}",
                prompt,
                max_tokens=120,
                stop_ids=[2],
                temperature=1.0,
                seed=_seed(engine, i),
                constraint=_in(engine, "json_schema", json.dumps(schema)),
            ),
        )

    async def all_of():
        return await asyncio.gather(*(one(i, w) for i, w in enumerate(words)))

    for word, outs in zip(words, run(engine, all_of())):
        assert outs[-1].finish_reason == "stop"
        assert json.loads(tokenizer.decode(_ids(outs))) == {"w": word}


def test_what_the_server_reads_is_there(engine, prompt):
    """services/decode/engine.py's contract, as the decode service reads it: a model id, the
    engine's info, stats (or None), a load that counts a request while it runs, and abort of
    an unknown id answering False."""
    from toolwire.services.decode.engine import EngineLoad, EngineStats

    assert isinstance(engine.model_id, str) and engine.model_id
    assert engine.info.max_batch > 0 and engine.info.max_model_len > len(prompt)
    assert engine.stats is None or isinstance(engine.stats, EngineStats)
    assert isinstance(engine.occupancy(), EngineLoad)
    assert not run(engine, engine.abort("never-started"))

    async def load_while_running():
        seen = None
        async for _ in engine.generate(req("counted", prompt, max_tokens=3)):
            seen = engine.active_requests() if seen is None else seen
        return seen

    assert run(engine, load_while_running()) == 1
    assert engine.active_requests() == 0
