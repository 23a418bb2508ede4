"""OpenAI's function-calling guide, step by step, with the official SDK against the stack."""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Optional

import jsonschema
import openai
from pydantic import BaseModel

from bench import tool_rounds
from tests.tools_fixtures import UNITS, WEATHER
from toolwire.request.limits import Limits

LIMITS = Limits()  # the stack runs with the defaults

CALL_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")
USER = {"role": "user", "content": "What is the weather like in Paris today?"}


def test_weather_flow_step_by_step(client, stack):
    messages = [dict(USER)]
    completion = client.chat.completions.create(
        model=stack.model, messages=messages, tools=[WEATHER], tool_choice="required", temperature=0
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls
    ids = [c.id for c in choice.message.tool_calls]
    assert len(set(ids)) == len(ids) and all(CALL_ID.match(i) for i in ids)
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.function.name == "get_weather"
        assert isinstance(call.function.arguments, str)
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0

    # The guide appends the SDK's own message object, then one tool message per call.
    messages.append(choice.message)
    for call in choice.message.tool_calls:
        messages.append(
            {"role": "tool", "tool_call_id": call.id, "content": "14 degrees Celsius, light rain"}
        )
    # As the guide writes it: no max_tokens. The model answers from the result and stops.
    second = client.chat.completions.create(
        model=stack.model, messages=messages, tools=[WEATHER], tool_choice="none", temperature=0
    )
    answer = second.choices[0]
    assert answer.message.tool_calls is None
    assert answer.finish_reason == "stop", answer.message.content
    text = answer.message.content
    assert ("14" in text or "light rain" in text) and "<" not in text, text
    # The round is in the prompt: longer than the question alone under the same choice (the
    # tools block is left out under tool_choice none, so the first request is no yardstick).
    bare = client.chat.completions.create(
        model=stack.model, messages=[dict(USER)], tools=[WEATHER], tool_choice="none", max_tokens=1
    )
    assert second.usage.prompt_tokens > bare.usage.prompt_tokens


def test_tool_rounds_are_answered_grounded_and_clean(client, stack):
    """bench/tool_rounds.py's rounds, tool_choice auto and none, no max_tokens: the answer
    stops by itself, states the result's key fact and writes no markup (docs/performance.md has the table
    against llama.cpp; one round loops in both servers, so the bar is 14 of 16)."""
    answers = tool_rounds.run(client, stack.model, max_tokens=None)
    assert tool_rounds.summary(answers)["all_three"] >= 14, [
        (a.round, a.mode, a.finish, a.text[:80]) for a in answers if not a.good
    ]
    assert all(
        a.finish in ("stop", "length") and a.tokens <= LIMITS.default_max_tokens for a in answers
    )


def test_answers_after_a_tool_result_never_write_its_markup(client, stack):
    """Tool results are rendered in <tool_response> blocks; the answer may not write one (the
    135M model echoes the block verbatim when nothing stops it), with or without tools."""
    first = client.chat.completions.create(
        model=stack.model,
        messages=[dict(USER)],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        parallel_tool_calls=False,
    )
    call = first.choices[0].message.tool_calls[0]
    messages = [
        dict(USER),
        first.choices[0].message,
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": "14 degrees Celsius and light rain in Paris",
        },
    ]
    for kw in ({"tools": [WEATHER], "tool_choice": "none"}, {"tools": [WEATHER]}, {}):
        for sampling in ({"temperature": 0}, {"temperature": 1.0, "seed": 1}):
            answer = (
                client.chat.completions.create(
                    model=stack.model, messages=messages, max_tokens=40, **sampling, **kw
                )
                .choices[0]
                .message
            )
            text = answer.content or ""
            assert "<tool_response" not in text and "</tool_response>" not in text, (kw, text)
            if kw.get("tool_choice") == "none":
                assert "<tool" not in text, text


def test_strict_enum_arguments_hold_when_sampling(client, stack):
    schema = UNITS["function"]["parameters"]
    for seed in (1, 2, 3):
        completion = client.chat.completions.create(
            model=stack.model,
            tools=[UNITS],
            temperature=1.0,
            seed=seed,
            parallel_tool_calls=False,
            max_tokens=200,
            messages=[{"role": "user", "content": "How warm is it in Oslo, in fahrenheit?"}],
            tool_choice={"type": "function", "function": {"name": "get_temperature"}},
        )
        for call in completion.choices[0].message.tool_calls:
            args = json.loads(call.function.arguments)
            jsonschema.validate(args, schema)
            assert args["unit"] in ("celsius", "fahrenheit")


class Unit(str, Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class GetWeather(BaseModel):
    city: str
    unit: Optional[Unit]


def test_pydantic_function_tool_and_parse(client, stack):
    tool = openai.pydantic_function_tool(GetWeather)
    assert "$defs" in tool["function"]["parameters"]  # $ref, titles, nullable anyOf
    completion = client.chat.completions.parse(
        model=stack.model,
        messages=[dict(USER)],
        tools=[tool],
        tool_choice="required",
        temperature=0,
    )
    calls = completion.choices[0].message.tool_calls
    assert calls
    for call in calls:
        assert isinstance(call.function.parsed_arguments, GetWeather)
        assert call.function.parsed_arguments.city


def test_streaming_accumulation_loop_matches_non_streamed(client, stack):
    kwargs = dict(
        model=stack.model,
        messages=[dict(USER)],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
    )
    stream = client.chat.completions.create(stream=True, **kwargs)
    final_tool_calls = {}
    finish = None
    for chunk in stream:  # the guide's loop, verbatim
        for tool_call in chunk.choices[0].delta.tool_calls or []:
            index = tool_call.index
            if index not in final_tool_calls:
                final_tool_calls[index] = tool_call
            final_tool_calls[index].function.arguments += tool_call.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    streamed = [final_tool_calls[i] for i in sorted(final_tool_calls)]
    assert [(c.function.name, c.function.arguments) for c in streamed] == [
        (c.function.name, c.function.arguments) for c in whole
    ]


def test_stream_helper_gives_parsed_calls(client, stack):
    tool = openai.pydantic_function_tool(GetWeather)
    events = []
    with client.chat.completions.stream(
        model=stack.model,
        messages=[dict(USER)],
        tools=[tool],
        tool_choice="required",
        temperature=0,
    ) as stream:
        for event in stream:
            events.append(event.type)
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events
    assert "tool_calls.function.arguments.done" in events
    call = final.choices[0].message.tool_calls[0]
    assert isinstance(call.function.parsed_arguments, GetWeather)
