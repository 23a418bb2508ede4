"""Speculation on the ggml and torch steps (services/decode/drafts.py, Scheduler._verify)
changes how many forwards a request takes, never what it decodes: greedy output with drafts
equals greedy output without them, unconstrained and under a strict schema; a seed still
reproduces. Those run with every continuation drafted (an eager prior), so that drafts are
refused as well as kept; as shipped, where the context holds what the model writes, drafts
are kept and a forward yields more than one token."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from toolwire.constraints.kinds import Constraint, Kind
from toolwire.services.decode import drafts
from toolwire.services.decode.drafts import StepCost
from toolwire.services.decode.engine import EngineRequest

from .test_reuse_and_jump import chat

RESULT = (
    "14 degrees Celsius and light rain in Paris, wind 12 km/h from the west, humidity 81 "
    "percent, sunset at 17:02"
)
CONVERSATIONS = [
    [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": RESULT},
    ],
    [{"role": "user", "content": "Repeat exactly: the quick brown fox jumps over the lazy dog."}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "user", "content": "List three colours, then list them again in reverse."}],
    [{"role": "user", "content": "Summarize: tea is grown in China. Tea is grown in India."}],
    [{"role": "user", "content": "What is 12 times 12? Explain step by step."}],
]
ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
    "required": ["city", "note"],
    "additionalProperties": False,
}


# Greedy runs that may differ with drafts, by step: a verified draft's rows are computed in
# one forward of several positions, so a kernel that rounds by how many rows it multiplies
# can move a near-tie. The ggml step and the torch step in fp32 (within 5e-5 of the
# one-row logits) measured none of these prompts differ; the torch step's int8 matmuls take
# bf16 activations (within 0.25 of logits near 31), and one prompt of the six, a list of
# near-identical dates, measured one diverging token (eagerly drafted; as shipped, 0 to 2
# of the six as the drafts fall).
MAY_DIFFER = {"ggml": 0, "torch": 0, "torch-int8": 1}


@pytest.fixture(scope="module")
def torch_fp32_engine():
    from tests.conftest import _engine, _stop

    engine = _engine(step="torch", dtype="fp32")
    yield engine
    _stop(engine)


CPU_COST = StepCost({1: 0.0116, 2: 0.020, 9: 0.057})


@pytest.fixture(scope="module", params=list(MAY_DIFFER))
def engine(request):
    name = {"ggml": "torch_engine", "torch": "torch_fp32_engine", "torch-int8": "torch_step_engine"}
    engine = request.getfixturevalue(name[request.param])
    engine.name = request.param
    # The policy's choices depend on what a forward costs, which the engine measured when it
    # loaded, on however busy the machine was then: these tests fix it at the ggml step's
    # figures on an idle 2-core machine, so that what they draft does not vary by run.
    measured, engine.scheduler.cost = engine.scheduler.cost, CPU_COST
    yield engine
    engine.scheduler.cost = measured


@pytest.fixture
def eager(monkeypatch):
    """Every continuation drafted: a prior of 95% kept that no draft's outcome moves much."""
    monkeypatch.setattr(drafts, "PRIOR_ACCEPT", 0.95)
    monkeypatch.setattr(drafts, "PRIOR_WEIGHT", 1e6)


@contextlib.contextmanager
def speculation(engine, on: bool):
    before, engine.scheduler.speculate = engine.scheduler.speculate, on
    try:
        yield
    finally:
        engine.scheduler.speculate = before


async def _run(engine, rid, prompt, **kw):
    ids = []
    async for out in engine.generate(EngineRequest(rid, prompt, stop_ids=[2], **kw)):
        ids += out.token_ids
    return ids


def run(engine, rid, prompt, on, **kw):
    with speculation(engine, on):
        return engine.loop.run_until_complete(_run(engine, rid, prompt, **kw))


def test_greedy_output_with_drafts_is_greedy_output_without(engine, tokenizer, eager):
    assert engine.step.verifies_drafts and engine.scheduler.speculate  # on by default here
    prompts = [chat(tokenizer, c) for c in CONVERSATIONS]
    stats = engine.stats
    differ = []
    refused = stats.spec_draft_tokens - stats.spec_accepted_tokens
    for i, prompt in enumerate(prompts):
        plain = run(engine, f"off{i}", prompt, False, max_tokens=48, temperature=0.0)
        drafted = run(engine, f"on{i}", prompt, True, max_tokens=48, temperature=0.0)
        if drafted != plain:
            differ.append((i, tokenizer.decode(plain), tokenizer.decode(drafted)))
    assert stats.spec_draft_tokens - stats.spec_accepted_tokens > refused  # some refused
    assert len(differ) <= MAY_DIFFER[engine.name], differ


def test_sequences_drafting_beside_others_decode_alike(engine, tokenizer, eager):
    """Four sequences in one batch, some drafting while others take one row (on the torch
    step those rows' slots are then not consecutive): each decodes as it does alone."""
    prompts = [chat(tokenizer, CONVERSATIONS[i]) for i in (0, 1, 2, 4)]

    async def together(on: bool):
        with speculation(engine, on):
            runs = [
                _run(engine, f"batch{on}{i}", p, max_tokens=32, temperature=0.0)
                for i, p in enumerate(prompts)
            ]
            return await asyncio.gather(*runs)

    drafts = engine.stats.spec_drafts
    plain = engine.loop.run_until_complete(together(False))
    drafted = engine.loop.run_until_complete(together(True))
    assert engine.stats.spec_drafts > drafts
    differ = [
        (
            i,
            next(j for j, (x, y) in enumerate(zip(a + [-1], b + [-2])) if x != y),
            tokenizer.decode(a),
            tokenizer.decode(b),
        )
        for i, (a, b) in enumerate(zip(plain, drafted))
        if a != b
    ]
    assert len(differ) <= MAY_DIFFER[engine.name], differ


def test_a_sequence_that_repeats_its_prompt_keeps_drafts(engine, tokenizer):
    stats = engine.stats
    steps, kept = stats.steps, stats.spec_accepted_tokens
    prompt = chat(tokenizer, CONVERSATIONS[1])
    drafted = run(engine, "repeat", prompt, True, max_tokens=48, temperature=0.0)
    # The sentence is ten tokens: its first three find the match, a shadow draft or two
    # shows the model copying, and drafts write the rest.
    assert stats.spec_accepted_tokens - kept >= 3
    assert len(drafted) > stats.steps - steps  # more than one token a forward


def test_a_strict_schema_decodes_alike_with_and_without_drafts(engine, tokenizer, eager):
    prompt = chat(
        tokenizer,
        [
            {
                "role": "user",
                "content": 'Reply with JSON {"city": ..., "note": ...}: the city is Paris, '
                "and the note is: Paris is the capital of France.",
            }
        ],
    )
    constraint = Constraint(Kind.JSON_SCHEMA, json.dumps(ARGS))
    drafts = engine.stats.spec_drafts
    out = [
        run(
            engine, f"schema{on}", prompt, on, max_tokens=40, temperature=0.0, constraint=constraint
        )
        for on in (False, True)
    ]
    assert out[0] == out[1]
    assert json.loads(tokenizer.decode(out[1]))["city"]  # whole, valid JSON under the grammar
    assert engine.stats.spec_drafts > drafts  # the note copies the prompt: drafts verified


def test_a_seed_reproduces_with_drafts(engine, tokenizer, eager):
    prompt = chat(tokenizer, CONVERSATIONS[0])
    kw = dict(max_tokens=40, temperature=0.8, top_p=0.95, seed=11)
    first = run(engine, "seed-a", prompt, True, **kw)
    again = run(engine, "seed-b", prompt, True, **kw)
    assert first == again and len(first) > 0
