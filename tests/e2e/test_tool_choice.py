"""Each tool_choice mode is enforced by the constraint, streamed or not, sampled or greedy."""

from __future__ import annotations

import json

import jsonschema

from tests.tools_fixtures import NO_PARAMS, SEND_EMAIL, UNITS, WEATHER

ALL = [WEATHER, UNITS, SEND_EMAIL]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in ALL}
ASK = [{"role": "user", "content": "Check the weather in Paris and email it to bob@example.com."}]


def _calls(completion):
    return completion.choices[0].message.tool_calls or []


def _validate(calls):
    for c in calls:
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


def test_none_never_calls_even_when_sampling(client, stack):
    for seed in (1, 2, 3):
        r = client.chat.completions.create(
            model=stack.model,
            messages=ASK,
            tools=ALL,
            tool_choice="none",
            temperature=1.0,
            seed=seed,
            max_tokens=40,
        )
        assert not _calls(r)
        assert "<tool_call>" not in (r.choices[0].message.content or "")
        assert r.choices[0].finish_reason in ("stop", "length")


def test_required_without_parallel_gives_exactly_one_valid_call(client, stack):
    # Seeds whose sampled call ends within max_tokens. Jump-forward takes no draws for forced
    # tokens, so a seed's path changed with it: seed 1 now samples a 300-token location
    # string at temperature 1 (cut by length: the model's choice, not the constraint's).
    for seed in (2, 3, 4):
        r = client.chat.completions.create(
            model=stack.model,
            messages=ASK,
            tools=ALL,
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=1.0,
            seed=seed,
            max_tokens=300,
        )
        calls = _calls(r)
        assert len(calls) == 1
        assert r.choices[0].finish_reason == "tool_calls"
        _validate(calls)


def test_required_with_parallel_gives_valid_calls(client, stack):
    r = client.chat.completions.create(
        model=stack.model,
        messages=ASK,
        tools=ALL,
        tool_choice="required",
        temperature=0,
        max_tokens=400,
    )
    assert r.choices[0].finish_reason == "tool_calls"
    calls = _calls(r)
    assert calls and r.choices[0].message.content is None
    _validate(calls)
    assert len({c.id for c in calls}) == len(calls)


def test_named_forces_that_tool(client, stack):
    for seed in (1, 2):
        r = client.chat.completions.create(
            model=stack.model,
            messages=ASK,
            tools=ALL,
            temperature=1.0,
            seed=seed,
            parallel_tool_calls=False,
            max_tokens=300,
            tool_choice={"type": "function", "function": {"name": "send_email"}},
        )
        calls = _calls(r)
        assert calls and all(c.function.name == "send_email" for c in calls)
        _validate(calls)


def test_auto_gives_text_or_valid_calls(client, stack):
    for seed in (1, 2, 3):
        r = client.chat.completions.create(
            model=stack.model, messages=ASK, tools=ALL, temperature=1.0, seed=seed, max_tokens=120
        )
        calls = _calls(r)
        _validate(calls)
        if r.choices[0].finish_reason == "tool_calls":
            assert calls
        else:
            assert r.choices[0].message.content is not None


def test_tool_without_parameters_gets_empty_object(client, stack):
    r = client.chat.completions.create(
        model=stack.model,
        messages=[{"role": "user", "content": "What time is it?"}],
        tools=[NO_PARAMS],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        temperature=0,
    )
    assert [c.function.arguments for c in _calls(r)] == ["{}"]


def test_streamed_equals_non_streamed_at_temperature_zero(client, stack):
    for choice in ("required", "none"):
        kwargs = dict(
            model=stack.model,
            messages=ASK,
            tools=ALL,
            tool_choice=choice,
            temperature=0,
            max_tokens=60,
        )
        _assert_streamed_equals_whole(client, kwargs)


def _assert_streamed_equals_whole(client, kwargs):
    whole = client.chat.completions.create(**kwargs).choices[0]
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        content += d.content or ""
        for c in d.tool_calls or []:
            entry = calls.setdefault(c.index, [None, ""])
            if c.function.name:
                entry[0] = c.function.name
            entry[1] += c.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == whole.finish_reason
    assert content == (whole.message.content or "")
    assert [calls[i] for i in sorted(calls)] == [
        [c.function.name, c.function.arguments] for c in whole.message.tool_calls or []
    ]
    return whole


def test_an_output_the_grammar_ends_streams_whole_to_its_finish(client, stack):
    """A strict single call (parallel_tool_calls false) and a JSON-schema response end in the
    engine step that samples their last free token, the forced closing going out with the
    finish: streamed or not, the call's arguments and the JSON arrive whole, the same both
    ways, and the finish is the model's (tool_calls, stop), not max_tokens."""
    call = dict(
        model=stack.model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=100,
    )
    whole = _assert_streamed_equals_whole(client, call)
    assert whole.finish_reason == "tool_calls"
    _validate(whole.message.tool_calls)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    answer = dict(
        model=stack.model,
        messages=[{"role": "user", "content": "Name a city, in JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
        temperature=0,
        max_tokens=100,
    )
    whole = _assert_streamed_equals_whole(client, answer)
    assert whole.finish_reason == "stop"
    jsonschema.validate(json.loads(whole.message.content), schema)


def _allowed(mode: str, *names: str) -> dict:
    tools = [{"type": "function", "function": {"name": n}} for n in names]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}


def test_allowed_tools_required_calls_only_the_subset(client, stack):
    """Every tool stays in the prompt; the calls are of the allowed subset only, at least one,
    streamed or not, while sampling."""
    allowed = {"get_temperature", "send_email"}
    for seed, stream in ((1, False), (2, True), (3, False)):
        kwargs = dict(
            model=stack.model,
            messages=ASK,
            tools=ALL,
            tool_choice=_allowed("required", *sorted(allowed)),
            temperature=1.0,
            seed=seed,
            max_tokens=200,
        )
        if stream:
            names = [
                c.function.name
                for chunk in client.chat.completions.create(stream=True, **kwargs)
                for ch in chunk.choices
                for c in ch.delta.tool_calls or []
                if c.function and c.function.name
            ]
        else:
            r = client.chat.completions.create(**kwargs)
            names = [c.function.name for c in _calls(r)]
            if r.choices[0].finish_reason == "tool_calls":  # not cut by max_tokens
                _validate(_calls(r))
        assert names and set(names) <= allowed


def test_allowed_tools_auto_never_calls_outside_the_subset(client, stack):
    for seed in (1, 2):
        r = client.chat.completions.create(
            model=stack.model,
            messages=ASK,
            tools=ALL,
            tool_choice=_allowed("auto", "get_temperature"),
            temperature=1.0,
            seed=seed,
            max_tokens=120,
        )
        assert {c.function.name for c in _calls(r)} <= {"get_temperature"}
