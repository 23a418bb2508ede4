"""Prefix reuse and jump-forward in the torch engine change how much is computed, never what a
greedy request decodes: each is compared with the same request with the feature off, on both
steps (ggml reuses a prefix through llama.cpp's sequence copy and state save/load; the torch
step through its slot cache)."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
import torch

from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import in_dialect
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.formats import Tool, ToolChoice, get_format
from toolwire.grpc_gen.common.v1.common_pb2 import ResponseFormat
from toolwire.services.decode.engine import EngineRequest
from toolwire.services.decode.steps.torch_llama import Span


@pytest.fixture(scope="module", params=["ggml", "torch"])
def engine(request):
    return request.getfixturevalue(
        "torch_engine" if request.param == "ggml" else "torch_step_engine"
    )


SYSTEM = "You are a careful assistant for a shipping company. " * 8


def chat(tokenizer, messages):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


async def _greedy(engine, rid, prompt, max_tokens=12, constraint=None):
    ids, last = [], None
    async for out in engine.generate(
        EngineRequest(rid, prompt, max_tokens, stop_ids=[2], temperature=0.0, constraint=constraint)
    ):
        ids += out.token_ids
        last = out
    return ids, last


def greedy(engine, rid, prompt, **kw):
    return engine.loop.run_until_complete(_greedy(engine, rid, prompt, **kw))


def without_reuse(engine, rid, prompt):
    cache, engine.scheduler.prefix_cache = engine.scheduler.prefix_cache, None
    try:
        return greedy(engine, rid, prompt)
    finally:
        engine.scheduler.prefix_cache = cache


def test_repeated_and_extended_prompts_decode_as_without_reuse(engine, tokenizer):
    turn1 = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Where is my parcel?"},
    ]
    turn2 = turn1 + [
        {"role": "assistant", "content": "It left the depot this morning."},
        {"role": "user", "content": "When will it arrive?"},
    ]
    p1, p2 = chat(tokenizer, turn1), chat(tokenizer, turn2)
    ref1, _ = without_reuse(engine, "ref1", p1)
    ref2, _ = without_reuse(engine, "ref2", p2)
    hits = engine.stats.prefix_hits
    first, _ = greedy(engine, "first", p1)
    again, out = greedy(engine, "again", p1)
    tail = engine.step.min_prefill
    assert out.cached_tokens == len(p1) - tail  # all but the exact tail
    longer, out2 = greedy(engine, "longer", p2)
    assert out2.cached_tokens >= len(p1) - tail
    assert first == again == ref1
    assert engine.stats.prefix_hits - hits >= out.cached_tokens + out2.cached_tokens
    if engine.step.__class__.__name__ == "GgmlStep":
        assert longer == ref2  # ggml's cached keys are the very ones a whole prefill writes
        return
    # The torch step's fp32 prefill rounds differently by chunk length (the BLAS kernel is
    # chosen by matrix shape): an extended prompt's keys, reused from a shorter prefill, differ
    # from a whole prefill's in the last bits, and on some CPUs that flips a near-tie a few
    # tokens on (seen: AVX-512, the 7th token). So: the same first token, and the same logits
    # to within rounding, computed both ways in the spare slot.
    assert longer[:1] == ref2[:1]
    whole, reused = _logits_both_ways(engine, p1, p2)
    assert torch.nn.functional.cosine_similarity(whole, reused, dim=0) > 0.9999
    assert (whole - reused).abs().max() < 1e-2 * whole.abs().max()


def _logits_both_ways(engine, p1, p2):
    """The last position's logits of p2 prefilled whole, and prefilled as p1 then the rest, in
    the slot no request holds (the engine is idle between requests)."""
    slot = engine.max_batch
    with torch.inference_mode():
        whole = engine.step.forward([], [Span(slot, p2, 0)])[0].clone()
        engine.step.forward([], [Span(slot, p1, 0)])
        reused = engine.step.forward([], [Span(slot, p2[len(p1) :], len(p1))])[0].clone()
    return whole, reused


CALL = {
    "type": "object",
    "properties": {
        "name": {"const": "get_weather"},
        "arguments": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
TAG = {
    "type": "structural_tag",
    "format": {
        "type": "tags_with_separator",
        "separator": "\n",
        "at_least_one": True,
        "stop_after_first": True,
        "tags": [
            {
                "type": "tag",
                "begin": "<tool_call>\n",
                "end": "\n</tool_call>",
                "content": {"type": "json_schema", "json_schema": CALL},
            }
        ],
    },
}


def test_jump_forward_runs_forced_text_in_one_forward(engine, tokenizer):
    prompt = chat(tokenizer, [{"role": "user", "content": "What is the weather in Oslo?"}])
    c = in_dialect(
        Constraint(Kind("structural_tag"), json.dumps(TAG)), engine.info.constraint_dialect
    )
    runs = {}
    # The forwards counted are jumps' alone: drafts would save forwards too.
    speculate, engine.scheduler.speculate = engine.scheduler.speculate, False
    for jump in (False, True):
        engine.scheduler.jump_forward = jump
        steps = engine.stats.steps
        try:
            ids, out = greedy(engine, f"jump-{jump}", prompt, max_tokens=60, constraint=c)
        finally:
            engine.scheduler.jump_forward = True
            if jump:
                engine.scheduler.speculate = speculate
        text = tokenizer.decode(ids)
        assert out.finish_reason == "stop", text
        assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
        call = json.loads(text[len("<tool_call>\n") : -len("\n</tool_call>")])
        jsonschema.validate(call, CALL)
        runs[jump] = (call, engine.stats.steps - steps, out.completion_tokens)
    (call_off, steps_off, n_off), (call_on, steps_on, n_on) = runs[False], runs[True]
    assert steps_off >= n_off  # one forward per token
    assert steps_on < n_on and steps_on < steps_off / 2  # the markup and keys came in chunks
    # The forced text comes in its canonical tokens where the model, masked token by token,
    # spelled it in pieces ("<", "t", "ool", ...): the free parts that follow are conditioned
    # on other ids and may differ (here: the JSON's indentation), the call is the same.
    assert call_on["name"] == call_off["name"]


def test_forced_text_that_starts_inside_a_character_is_no_jump(torch_engine, tokenizer):
    """A sampled byte token can end inside a multi-byte marker (DeepSeek's ｜ on a vocabulary
    without its special tokens); xgrammar cannot hand the rest over as text (it raises). The
    engine then takes no jump, where the raise used to end its loop and hang queued requests."""
    import types

    from toolwire.constraints import xgrammar_core as xgr

    wide = {
        "type": "structural_tag",
        "format": {
            "type": "tag",
            "begin": "<｜tool▁sep｜>",
            "content": {"type": "const_string", "value": "x"},
            "end": ".",
        },
    }
    compiled = torch_engine.compiler.compile(Constraint(Kind("structural_tag"), json.dumps(wide)))
    matcher = xgr.GrammarMatcher(compiled)
    first_byte = tokenizer.convert_tokens_to_ids("ï")  # 0xEF, the first of ｜'s three bytes
    assert matcher.accept_token(tokenizer.convert_tokens_to_ids("<"))
    assert matcher.accept_token(first_byte)
    try:
        matcher.find_jump_forward_string()
        raised = False
    except UnicodeDecodeError:
        raised = True
    assert raised  # xgrammar's behaviour the engine must survive
    seq = types.SimpleNamespace(max_tokens=10, completion=0, matcher=matcher, stop_ids=[2])
    assert torch_engine.scheduler._forced(seq) == ([], False) and seq.completion == 0


class _Sink:
    """Each output as the engine hands it over (no merging, unlike generate()'s queue)."""

    def __init__(self):
        self.outputs = []
        self.done = asyncio.Event()

    def put_nowait(self, out):
        self.outputs.append(out)
        if out.finish_reason is not None:
            self.done.set()

    def fail(self, exc):
        raise exc


def _required_call(engine):
    """What the template service sends for a strict get_weather under tool_choice required,
    parallel_tool_calls false (bench's tool workload): one call, then only a stop."""
    tool = Tool("get_weather", parameters=CALL["properties"]["arguments"], strict=True)
    built = build_constraint(
        get_format("hermes"), [tool], ToolChoice("required"), False, ResponseFormat()
    )
    return in_dialect(Constraint.from_proto(built), engine.info.constraint_dialect)


def test_forced_opening_goes_out_before_the_forward_that_prefills_it(engine, tokenizer):
    """16 constrained calls admitted together prefill their prompt's tail and the
    forced opening (`<tool_call>\\n{"name": "get_weather", "arguments":`, 17 tokens) in one
    forward of 16 x 18 rows, ~16 decode steps' worth of compute. The opening went out with the
    first sampled token, after that forward, and a streamed call's name with it (TTFT 1.4 s at
    16 streams against llama.cpp's 0.2 s). It is the output whatever the forward computes:
    each request's first output is the forced text alone, handed over at admission."""
    c = _required_call(engine)
    opening = '<tool_call>\n{"name": "get_weather", "arguments":'
    cities = ["Oslo", "Rome", "Lima", "Quito"]
    prompts = [
        chat(tokenizer, [{"role": "user", "content": f"What is the weather in {cities[i % 4]}?"}])
        for i in range(16)
    ]

    async def together():
        sinks = [_Sink() for _ in prompts]
        for i, (p, sink) in enumerate(zip(prompts, sinks)):
            req = EngineRequest(f"opening-{i}", p, 20, stop_ids=[2], temperature=0.0, constraint=c)
            await engine.submit(req, sink)
        await asyncio.gather(*(s.done.wait() for s in sinks))
        return sinks

    for sink in engine.loop.run_until_complete(together()):
        first = sink.outputs[0]
        assert first.finish_reason is None
        assert tokenizer.decode(first.token_ids) == opening  # no sampled token after it
        rest = [t for o in sink.outputs[1:] for t in o.token_ids]
        assert tokenizer.decode(rest).startswith(" {")  # the arguments open after a forward


def _outputs(engine, rid, prompt, max_tokens, constraint):
    async def run():
        sink = _Sink()
        req = EngineRequest(rid, prompt, max_tokens, [2], temperature=0.0, constraint=constraint)
        await engine.submit(req, sink)
        await sink.done.wait()
        return sink.outputs

    return engine.loop.run_until_complete(run())


def test_an_output_the_grammar_ends_finishes_without_a_forward(engine, tokenizer):
    """Once the grammar admits nothing but a stop, the output is over: the call's closing
    `}\n</tool_call>` goes out whole with the finish, in the step that sampled the last free
    token, where it used to prefill its tokens and take two more steps (`>`, then the stop).
    Decoded token by token (no jump-forward) the last output is that stop alone."""
    c = _required_call(engine)
    prompt = chat(tokenizer, [{"role": "user", "content": "What is the weather in Oslo?"}])
    runs = {}
    for jump in (False, True):
        engine.scheduler.jump_forward = jump
        try:
            outs = _outputs(engine, f"ends-{jump}", prompt, 100, c)
        finally:
            engine.scheduler.jump_forward = True
        text = tokenizer.decode([t for o in outs for t in o.token_ids])
        assert outs[-1].finish_reason == "stop", text
        assert text.endswith("}\n</tool_call>")
        call = json.loads(text[len("<tool_call>\n") : -len("\n</tool_call>")])
        assert call["name"] == "get_weather"
        runs[jump] = outs
    assert runs[False][-1].token_ids == []  # token by token: a forward sampled the stop alone
    last = tokenizer.decode(runs[True][-1].token_ids)
    assert last.endswith("}\n</tool_call>") and len(runs[True][-1].token_ids) > 1, last


def test_a_grammar_end_at_max_tokens_is_length_as_token_by_token(engine, tokenizer):
    """The closing taken whole must not change the finish: where its last token is the
    max_tokens-th, decoding token by token ends on `length` (no room left for the stop)."""
    c = _required_call(engine)
    prompt = chat(tokenizer, [{"role": "user", "content": "What is the weather in Rome?"}])
    outs = _outputs(engine, "ends-full", prompt, 60, c)
    n = outs[-1].completion_tokens
    at_n = _outputs(engine, "ends-at-n", prompt, n, c)
    above = _outputs(engine, "ends-above-n", prompt, n + 1, c)
    whole = tokenizer.decode([t for o in outs for t in o.token_ids])
    for run, finish in ((at_n, "length"), (above, "stop")):
        assert run[-1].finish_reason == finish
        assert tokenizer.decode([t for o in run for t in o.token_ids]) == whole


def test_a_json_response_finishes_with_its_last_brace(engine, tokenizer):
    """A JSON-schema response: the `}` that completes the object is the last token; the stop
    after it needs no forward."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}},
        "required": ["city"],
        "additionalProperties": False,
    }
    c = in_dialect(
        Constraint(Kind("json_schema"), json.dumps(schema)), engine.info.constraint_dialect
    )
    prompt = chat(tokenizer, [{"role": "user", "content": "Name a city in JSON."}])
    outs = _outputs(engine, "json-ends", prompt, 40, c)
    text = tokenizer.decode([t for o in outs for t in o.token_ids])
    assert outs[-1].finish_reason == "stop" and outs[-1].token_ids, outs[-1]
    assert tokenizer.decode(outs[-1].token_ids).endswith("}")
    jsonschema.validate(json.loads(text), schema)


def test_an_output_the_grammar_fixes_whole_needs_no_slot_and_no_forward(engine, tokenizer):
    """A grammar with one possible output (a const schema) ends at admission: the request
    takes no slot, runs no forward and reuses nothing (its prompt was seen before, and
    `cached_tokens` stays 0: nothing was read from the cache)."""
    schema = {"const": "Oslo"}
    c = in_dialect(
        Constraint(Kind("json_schema"), json.dumps(schema)), engine.info.constraint_dialect
    )
    prompt = chat(tokenizer, [{"role": "user", "content": "Name a city in JSON."}])
    _outputs(engine, "const-warm", prompt, 2, None)  # the prompt is now in the prefix cache
    steps, hits = engine.stats.steps, engine.stats.prefix_hits
    outs = _outputs(engine, "const", prompt, 8, c)
    assert tokenizer.decode([t for o in outs for t in o.token_ids]) == '"Oslo"'
    assert outs[-1].finish_reason == "stop" and outs[-1].cached_tokens == 0
    assert engine.stats.steps == steps and engine.stats.prefix_hits == hits
    assert (
        all(s is None for s in engine.scheduler.slots)
        and not engine.scheduler.running
        and not engine.scheduler.prefilling
    )
    n = outs[-1].completion_tokens
    cut = _outputs(engine, "const-cut", prompt, n, c)  # its last token is the max_tokens-th
    assert cut[-1].finish_reason == "length"
