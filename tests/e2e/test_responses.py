"""The Responses API through the official SDK against the running stack (the embedded model, the
SQLite store): function calls streamed in the order `responses.stream()`'s state machine
demands, the weather flow stateless and with `previous_response_id` (its prefix reused), custom
tools under their grammars, allowed_tools, `responses.parse`, a length cut as `incomplete`,
stored responses read back, listed, deleted and private to their key, and refusals naming the
parameter."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import OTHER_KEY

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a given city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
ASK = "What is the weather like in Paris today?"
TICKET_RE = r"[A-Z]{3}-[0-9]{2,4}"
TICKET = {
    "type": "custom",
    "name": "open_ticket",
    "description": "Open a support ticket; the input is the ticket id.",
    "format": {"type": "grammar", "syntax": "regex", "definition": TICKET_RE},
}
PATCH_LARK = 'start: "*** Begin\\n" line line? line? "*** End"\nline: /[+-][a-z ]{0,20}\\n/\n'
PATCH_RE = r"\*\*\* Begin\n(?:[+-][a-z ]{0,20}\n){1,3}\*\*\* End"
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Apply a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": PATCH_LARK},
}
ID = {
    "resp": re.compile(r"resp_[0-9a-f]+$"),
    "fc": re.compile(r"fc_[0-9a-f]+$"),
    "call": re.compile(r"call_\w+$"),
    "msg": re.compile(r"msg_[0-9a-f]+$"),
}


def _other(stack):
    return openai.OpenAI(base_url=stack.base_url, api_key=OTHER_KEY, max_retries=0, timeout=300)


def _calls(response, kind="function_call"):
    return [item for item in response.output if item.type == kind]


def test_a_required_call_non_streamed(client, stack):
    r = client.responses.create(
        model=stack.model,
        input=ASK,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        parallel_tool_calls=False,
    )
    assert ID["resp"].match(r.id) and r.object == "response" and r.status == "completed"
    calls = _calls(r)
    assert calls and all(c.name == "get_weather" for c in calls)
    for c in calls:
        assert ID["fc"].match(c.id) and ID["call"].match(c.call_id) and c.status == "completed"
        jsonschema.validate(json.loads(c.arguments), WEATHER["parameters"])
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens >= 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.tool_choice == "required" and r.tools[0].name == "get_weather"
    assert r.model == stack.model


def test_the_stream_is_the_sdks_state_machine(client, stack):
    events = list(
        client.responses.create(
            model=stack.model,
            input=ASK,
            tools=[WEATHER],
            tool_choice="required",
            temperature=0,
            parallel_tool_calls=False,
            stream=True,
        )
    )
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert types.count("response.completed") == 1 and types[-1] == "response.completed"
    assert {e.response.id for e in events if hasattr(e, "response")} == {events[0].response.id}
    added = {e.output_index: e.item for e in events if e.type == "response.output_item.added"}
    done = {e.output_index: e.item for e in events if e.type == "response.output_item.done"}
    assert added and added.keys() == done.keys()
    for i, item in added.items():
        assert item.type == "function_call" and item.arguments == ""
        assert (done[i].id, done[i].call_id) == (item.id, item.call_id)
        deltas = "".join(
            e.delta
            for e in events
            if e.type == "response.function_call_arguments.delta" and e.output_index == i
        )
        assert deltas == done[i].arguments
        first = types.index("response.output_item.added")
        assert all(types.index(t) > first for t in types if t.startswith("response.function_call"))
    final = events[-1].response
    assert [o.model_dump() for o in final.output] == [done[i].model_dump() for i in sorted(done)]

    # And through the stream helper: parsed arguments, the final response.
    with client.responses.stream(
        model=stack.model,
        input=ASK,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        parallel_tool_calls=False,
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.status == "completed"
    calls = _calls(final)
    assert calls and all(c.parsed_arguments["city"] for c in calls)


def test_text_streams_in_a_message_item(client, stack):
    events = list(
        client.responses.create(
            model=stack.model, input="Say hello.", max_output_tokens=16, temperature=0, stream=True
        )
    )
    types = [e.type for e in events]
    i = types.index("response.output_item.added")
    assert types[i + 1] == "response.content_part.added"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert text and done.text == text
    assert events[-1].type in ("response.completed", "response.incomplete")
    assert events[-1].response.output_text == text


def test_the_weather_flow_stateless_and_stored(client, stack):
    first = client.responses.create(
        model=stack.model,
        input=ASK,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        parallel_tool_calls=False,
    )
    calls = _calls(first)
    results = [
        {"type": "function_call_output", "call_id": c.call_id, "output": "14 degrees, light rain"}
        for c in calls
    ]
    # Stateless, as Codex and the Agents SDK send it: the whole history every turn.
    history = [{"role": "user", "content": ASK}] + [c.model_dump() for c in calls]
    stateless = client.responses.create(
        model=stack.model,
        input=history + results,
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        store=False,
    )
    text = stateless.output_text
    assert stateless.status == "completed" and ("14" in text or "rain" in text), text
    # With previous_response_id: the stored turn, then only the results.
    stored = client.responses.create(
        model=stack.model,
        input=results,
        previous_response_id=first.id,
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
    )
    assert stored.output_text == text  # the same prompt, the same greedy answer
    assert stored.previous_response_id == first.id
    # The same conversation rebuilt from the store: the same prompt, its prefix reused (the
    # stateless turn computed it), and said so.
    assert stored.usage.input_tokens == stateless.usage.input_tokens
    assert stored.usage.input_tokens_details.cached_tokens >= stored.usage.input_tokens // 2
    # store: false kept nothing.
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(stateless.id)


def test_stored_responses_read_list_delete_and_stay_private(client, stack):
    r = client.responses.create(
        model=stack.model,
        input=[
            {"role": "developer", "content": "Answer in one word."},
            {"role": "user", "content": "Name a colour."},
            {"role": "user", "content": "Another one."},
        ],
        max_output_tokens=4,
        temperature=0,
    )
    again = client.responses.retrieve(r.id)
    assert again.id == r.id and again.output_text == r.output_text
    page = client.responses.input_items.list(r.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    everything = list(client.responses.input_items.list(r.id, limit=1, order="asc"))
    assert [i.role for i in everything] == ["developer", "user", "user"]
    assert all(ID["msg"].match(i.id) for i in everything)
    with pytest.raises(openai.NotFoundError):
        _other(stack).responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        _other(stack).responses.create(
            model=stack.model, input="go on", previous_response_id=r.id, max_output_tokens=2
        )
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(
            model=stack.model, input="go on", previous_response_id=r.id, max_output_tokens=2
        )
    assert e.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize("stream", [False, True])
def test_custom_tools_under_their_grammars(client, stack, stream):
    kw = dict(
        model=stack.model,
        input="My printer is broken, open a ticket.",
        tools=[TICKET, PATCH],
        tool_choice={"type": "custom", "name": "open_ticket"},
        temperature=1.0,
        parallel_tool_calls=False,
    )
    if stream:
        events = list(client.responses.create(**kw, stream=True))
        done = [e for e in events if e.type == "response.custom_tool_call_input.done"]
        assert done
        for d in done:
            deltas = "".join(
                e.delta
                for e in events
                if e.type == "response.custom_tool_call_input.delta" and e.item_id == d.item_id
            )
            assert d.input == deltas
        r = events[-1].response
    else:
        r = client.responses.create(**kw)
    calls = _calls(r, "custom_tool_call")
    assert calls and all(c.name == "open_ticket" for c in calls)
    assert all(re.fullmatch(TICKET_RE, c.input) for c in calls), [c.input for c in calls]
    patch = client.responses.create(
        **{**kw, "tool_choice": {"type": "custom", "name": "apply_patch"}, "input": "Patch it."}
    )
    (call,) = _calls(patch, "custom_tool_call")[:1]
    assert re.fullmatch(PATCH_RE, call.input), call.input
    # Its result goes back as a custom_tool_call_output.
    answer = client.responses.create(
        model=stack.model,
        input=[{"role": "user", "content": "Patch it."}, call.model_dump()]
        + [{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "applied"}],
        tools=[TICKET, PATCH],
        tool_choice="none",
        max_output_tokens=24,
        temperature=0,
    )
    assert answer.output_text


def test_allowed_tools_limit_the_calls(client, stack):
    other = {**WEATHER, "name": "get_time", "description": "The current time in a city."}
    r = client.responses.create(
        model=stack.model,
        input=ASK,
        tools=[WEATHER, other],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_time"}],
        },
        temperature=1.0,
        parallel_tool_calls=False,
    )
    assert {c.name for c in _calls(r)} == {"get_time"}


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_text_format(client, stack):
    r = client.responses.parse(
        model=stack.model,
        input="Name a city in France as JSON.",
        text_format=City,
        temperature=0,
        max_output_tokens=64,
    )
    assert isinstance(r.output_parsed, City) and r.output_parsed.name


def test_a_length_cut_is_incomplete(client, stack):
    r = client.responses.create(
        model=stack.model, input="Write a long story about ships.", max_output_tokens=3
    )
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 3


@pytest.mark.parametrize(
    "body, param",
    [
        (
            {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
            "input[0].call_id",
        ),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "frobnicate": 1}, "frobnicate"),
        (
            {
                "input": "hi",
                "tools": [
                    {
                        **TICKET,
                        "format": {"type": "grammar", "syntax": "lark", "definition": "start: ("},
                    }
                ],
            },
            "tools[0].format.definition",
        ),
    ],
)
def test_refusals_name_the_parameter_and_store_nothing(stack, body, param):
    r = httpx.post(
        f"{stack.base_url}/responses",
        headers={"Authorization": f"Bearer {stack.api_key}"},
        json={"model": stack.model, **body},
        timeout=60,
    )
    assert r.status_code in (400, 404), r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert r.headers["x-request-id"].startswith("resp_")
    got = httpx.get(
        f"{stack.base_url}/responses/{r.headers['x-request-id']}",
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )
    assert got.status_code == 404
