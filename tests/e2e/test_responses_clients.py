"""The agent frameworks people run on the Responses API, unmodified, against the running stack:
the OpenAI Agents SDK with its default model (OpenAIResponsesModel over an AsyncOpenAI client at
the stack's /v1) and LangChain's ChatOpenAI with use_responses_api=True.

Each test records the bodies the client put on the wire (an httpx event hook on the client's own
transport), so that it checks both what the framework sent (tool_choice, strict tools, the
function_call_output of the tool's result, previous_response_id) and what it made of the answer
(the tool actually run with schema-valid arguments, the final answer written after the tool
result, usage). The model is the embedded 135M one: tools are forced by tool_choice (the
constraint enforces required and named choices), parallel calls are off and sampling is greedy.
Nothing leaves the machine: Agents tracing is disabled, LangSmith tracing is off.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from agents.models.openai_provider import OpenAIProvider
from agents.models.openai_responses import OpenAIResponsesModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, custom_tool
from pydantic import BaseModel

ASK = "What is the weather like in Paris today?"
WEATHER_RESULT = "14 degrees and light rain"
TIME_RESULT = "10:42"
TICKET_RE = r"[A-Z]{3}-[0-9]{2,4}"
RESP_ID = re.compile(r"resp_[0-9a-f]+$")
CALL_ID = re.compile(r"call_\w+$")


@pytest.fixture(autouse=True)
def _nothing_leaves(monkeypatch):
    set_tracing_disabled(True)  # the Agents SDK would export traces to OpenAI
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        monkeypatch.setenv(var, "false")


class Wire:
    """The JSON bodies a client POSTed to /v1/responses, in order, and the statuses it got."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    def _request(self, request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/responses"):
            self.bodies.append(json.loads(request.content))

    def _response(self, response: httpx.Response) -> None:
        if response.request.method == "POST":
            self.statuses.append(response.status_code)

    async def _arequest(self, request: httpx.Request) -> None:
        self._request(request)

    async def _aresponse(self, response: httpx.Response) -> None:
        self._response(response)

    def client(self) -> httpx.Client:
        return httpx.Client(
            timeout=120, event_hooks={"request": [self._request], "response": [self._response]}
        )

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=120, event_hooks={"request": [self._arequest], "response": [self._aresponse]}
        )


def _input_types(body: dict[str, Any]) -> list[str]:
    return [item.get("type", "message") for item in body["input"]]


# -- the OpenAI Agents SDK ------------------------------------------------------------------------
def _tools(calls: list[tuple[str, dict[str, Any]]]):
    """Two function tools that record each call (name, arguments) and answer fixed strings."""

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a given city."""
        calls.append(("get_weather", {"city": city}))
        return f"{WEATHER_RESULT} in {city}"

    @function_tool
    def get_time(city: str) -> str:
        """Get the current local time in a given city."""
        calls.append(("get_time", {"city": city}))
        return TIME_RESULT

    return get_weather, get_time


def _provider(stack, wire: Wire) -> OpenAIProvider:
    """The SDK's default provider over an AsyncOpenAI client at the stack: its models are
    OpenAIResponsesModel (the SDK's default API is Responses)."""
    client = openai.AsyncOpenAI(
        base_url=stack.base_url,
        api_key=stack.api_key,
        max_retries=0,
        timeout=120,
        http_client=wire.async_client(),
    )
    return OpenAIProvider(openai_client=client)


def _settings(**kw) -> ModelSettings:
    return ModelSettings(temperature=0, parallel_tool_calls=False, **{"max_tokens": 64, **kw})


def _run_config(provider: OpenAIProvider) -> RunConfig:
    return RunConfig(model_provider=provider, tracing_disabled=True)


def _check_calls(calls, tools, name: str) -> None:
    """The tool ran once, as `name`, with arguments its own JSON schema accepts."""
    assert [n for n, _ in calls] == [name], calls
    schema = next(t.params_json_schema for t in tools if t.name == name)
    jsonschema.validate(calls[0][1], schema)
    assert calls[0][1]["city"].strip()


def _check_usage(responses) -> None:
    for r in responses:
        assert RESP_ID.match(r.response_id)
        u = r.usage
        assert u.requests == 1 and u.input_tokens > 0 and u.output_tokens > 0
        assert u.total_tokens == u.input_tokens + u.output_tokens


def test_agents_sdk_runs_a_tool_then_answers_from_its_result(stack, client):
    wire, calls = Wire(), []
    tools = _tools(calls)

    async def run():
        provider = _provider(stack, wire)
        assert isinstance(provider.get_model(stack.model), OpenAIResponsesModel)
        agent = Agent(
            name="weather",
            instructions="You answer weather questions using the tools.",
            tools=list(tools),
            model=stack.model,
            model_settings=_settings(tool_choice="required"),
        )
        return await Runner.run(agent, ASK, run_config=_run_config(provider), max_turns=3)

    result = asyncio.run(run())
    assert wire.statuses == [200, 200]
    first, second = wire.bodies
    # What the SDK sent: its strict flat tools, required, then (tool_choice reset) the results.
    assert first["tool_choice"] == "required" and first["include"] == []
    assert {t["name"] for t in first["tools"]} == {"get_weather", "get_time"}
    assert all(t["strict"] is True for t in first["tools"])
    assert "tool_choice" not in second
    assert _input_types(second) == ["message", "function_call", "function_call_output"]
    # The tool really ran, with valid arguments, and its result went back as its output.
    _check_calls(calls, tools, "get_weather")
    call, output, message = result.new_items
    assert isinstance(call, ToolCallItem) and isinstance(output, ToolCallOutputItem)
    assert isinstance(message, MessageOutputItem)
    assert CALL_ID.match(call.raw_item.call_id)
    sent_call, sent_output = second["input"][1:]
    assert sent_call["call_id"] == sent_output["call_id"] == call.raw_item.call_id
    assert sent_output["output"] == f"{WEATHER_RESULT} in {calls[0][1]['city']}"
    # The final answer was written from it.
    answer = result.final_output
    assert isinstance(answer, str) and ("14" in answer or "rain" in answer), answer
    assert len(result.raw_responses) == 2
    _check_usage(result.raw_responses)
    assert result.context_wrapper.usage.requests == 2
    # store defaults to true: the SDK's last response is on the server.
    assert client.responses.retrieve(result.last_response_id).output_text == answer


def test_agents_sdk_streamed_run_sees_the_call_then_the_text(stack):
    wire, calls = Wire(), []
    tools = _tools(calls)

    async def run():
        agent = Agent(
            name="clock",
            instructions="You answer with the tools.",
            tools=list(tools),
            model=stack.model,
            model_settings=_settings(tool_choice="get_time"),  # named: not the obvious tool
        )
        result = Runner.run_streamed(
            agent,
            "What time is it in Tokyo right now?",
            run_config=_run_config(_provider(stack, wire)),
            max_turns=3,
        )
        events = [e async for e in result.stream_events()]
        return result, events

    result, events = asyncio.run(run())
    first, second = wire.bodies
    assert first["stream"] is True and first["tool_choice"] == {
        "type": "function",
        "name": "get_time",
    }
    _check_calls(calls, tools, "get_time")
    seq = [
        e.data.type if e.type == "raw_response_event" else e.name
        for e in events
        if e.type in ("raw_response_event", "run_item_stream_event")
    ]
    assert seq.count("response.created") == seq.count("response.completed") == 2
    # The call streamed: its item, argument deltas that add up to the arguments it ran with.
    added = next(
        e.data.item
        for e in events
        if e.type == "raw_response_event"
        and e.data.type == "response.output_item.added"
        and e.data.item.type == "function_call"
    )
    assert added.name == "get_time" and added.arguments == ""
    deltas = "".join(
        e.data.delta
        for e in events
        if e.type == "raw_response_event"
        and e.data.type == "response.function_call_arguments.delta"
    )
    assert json.loads(deltas) == calls[0][1]
    # Then the run: the call, its output, and only after it the answer's text deltas.
    names = [n for n in seq if not n.startswith("response.")]
    assert names == ["tool_called", "tool_output", "message_output_created"], names
    text_deltas = [
        e.data.delta
        for e in events
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]
    assert text_deltas and seq.index("tool_output") < seq.index("response.output_text.delta")
    assert "".join(text_deltas) == result.final_output
    assert TIME_RESULT in result.final_output, result.final_output
    assert _input_types(second)[-1] == "function_call_output"
    _check_usage(result.raw_responses)


def test_agents_sdk_continues_with_previous_response_id(stack):
    wire, calls = Wire(), []
    weather, _ = _tools(calls)
    follow_up = "Thanks! Say the temperature again in one short sentence."

    async def run():
        provider = _provider(stack, wire)
        agent = Agent(
            name="weather",
            instructions="You answer weather questions using the tool.",
            tools=[weather],
            model=stack.model,
            model_settings=_settings(tool_choice="required"),
        )
        config = _run_config(provider)
        first = await Runner.run(
            agent, ASK, run_config=config, max_turns=3, auto_previous_response_id=True
        )
        talk = agent.clone(tools=[], model_settings=_settings(max_tokens=48))
        stored = await Runner.run(
            talk, follow_up, run_config=config, previous_response_id=first.last_response_id
        )
        # The same conversation sent whole (what a client without server state does).
        stateless = await Runner.run(
            talk,
            first.to_input_list() + [{"role": "user", "content": follow_up}],
            run_config=config,
        )
        return first, stored, stateless

    first, stored, stateless = asyncio.run(run())
    _check_calls(calls, [weather], "get_weather")
    call_turn, result_turn, stored_turn, stateless_turn = wire.bodies
    # Within the run the SDK sends only what is new: the tool's result after the stored call.
    assert "previous_response_id" not in call_turn
    assert result_turn["previous_response_id"] == first.raw_responses[0].response_id
    assert _input_types(result_turn) == ["function_call_output"]
    assert result_turn["input"][0]["call_id"] == first.new_items[0].raw_item.call_id
    answer = first.final_output
    assert "14" in answer or "rain" in answer, answer
    # The next run continues the stored chain: the same prompt as the whole history, so the
    # same greedy answer.
    assert stored_turn["previous_response_id"] == first.last_response_id
    assert _input_types(stored_turn) == ["message"]
    assert len(stateless_turn["input"]) == 5 and "previous_response_id" not in stateless_turn
    assert stored.final_output and stored.final_output == stateless.final_output
    (s,), (t,) = stored.raw_responses, stateless.raw_responses
    assert s.usage.input_tokens == t.usage.input_tokens


class Weather(BaseModel):
    city: str
    degrees: int


def test_agents_sdk_structured_output_type_after_a_tool(stack):
    wire, calls = Wire(), []

    # Offered until it has run (is_enabled): the next turn must write the final output.
    @function_tool(is_enabled=lambda ctx, agent: not calls)
    def get_weather(city: str) -> str:
        """Get the current weather in a given city."""
        calls.append(("get_weather", {"city": city}))
        return f"{WEATHER_RESULT} in {city}"

    async def run():
        agent = Agent(
            name="weather",
            instructions="You answer weather questions using the tool.",
            tools=[get_weather],
            model=stack.model,
            model_settings=_settings(tool_choice="required"),
            output_type=Weather,
        )
        return await Runner.run(
            agent, ASK, run_config=_run_config(_provider(stack, wire)), max_turns=3
        )

    result = asyncio.run(run())
    _check_calls(calls, [get_weather], "get_weather")
    first, second = wire.bodies
    fmt = first["text"]["format"]
    # A strict json_schema format together with tools, as the SDK sends every turn.
    assert fmt["type"] == "json_schema" and fmt["strict"] is True and first["tools"]
    assert second["text"]["format"] == fmt and second["tools"] == []
    assert _input_types(second)[-1] == "function_call_output"
    out = result.final_output
    assert isinstance(out, Weather), out
    message = result.new_items[-1]
    assert isinstance(message, MessageOutputItem)
    jsonschema.validate(json.loads(message.raw_item.content[0].text), fmt["schema"])
    # Written from the tool's result.
    assert "paris" in out.city.lower() and out.degrees == 14, out
    _check_usage(result.raw_responses)


@pytest.mark.parametrize(
    "settings, kwargs, param",
    [
        (ModelSettings(truncation="auto"), {}, "truncation"),
        (ModelSettings(top_logprobs=2), {}, "top_logprobs"),
        (ModelSettings(verbosity="low"), {}, "text.verbosity"),
        (ModelSettings(), {"conversation_id": "conv_123"}, "conversation"),
    ],
)
def test_agents_sdk_settings_toolwire_cannot_honor_are_refused(stack, settings, kwargs, param):
    wire = Wire()

    async def run():
        agent = Agent(name="x", model=stack.model, model_settings=settings)
        await Runner.run(agent, "Hi.", run_config=_run_config(_provider(stack, wire)), **kwargs)

    with pytest.raises(openai.BadRequestError) as e:
        asyncio.run(run())
    assert e.value.body["param"] == param, e.value.body
    assert wire.statuses == [400]


# -- LangChain ------------------------------------------------------------------------------------
@tool
def lc_get_weather(city: str) -> str:
    """Get the current weather in a given city."""
    return f"{WEATHER_RESULT} in {city}"


@tool
def lc_get_time(city: str) -> str:
    """Get the current local time in a given city."""
    return TIME_RESULT


def _chat(stack, wire: Wire, **kw) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=stack.base_url,
        api_key=stack.api_key,
        model=stack.model,
        use_responses_api=True,
        temperature=0,
        max_tokens=64,
        max_retries=0,
        http_client=wire.client(),
        **kw,
    )


def _lc_usage(msg: AIMessage) -> None:
    u = msg.usage_metadata
    assert u is not None and u["input_tokens"] > 0 and u["output_tokens"] > 0
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]


def test_langchain_tool_call_and_tool_message_round_trip(stack):
    wire = Wire()
    llm = _chat(stack, wire)
    tools = [lc_get_weather, lc_get_time]
    question = HumanMessage(ASK)
    msg = llm.bind_tools(
        tools, tool_choice="lc_get_weather", strict=True, parallel_tool_calls=False
    ).invoke([question])
    body = wire.bodies[0]
    assert body["tool_choice"] == {"type": "function", "name": "lc_get_weather"}
    assert all(t["strict"] is True and t["type"] == "function" for t in body["tools"])
    (call,) = msg.tool_calls
    assert call["name"] == "lc_get_weather" and CALL_ID.match(call["id"])
    jsonschema.validate(call["args"], body["tools"][0]["parameters"])
    assert call["args"]["city"].strip()
    assert msg.response_metadata["status"] == "completed"
    assert RESP_ID.match(msg.response_metadata["id"])
    _lc_usage(msg)
    # The tool's result back as a ToolMessage, and the answer written from it.
    result = lc_get_weather.invoke(call)
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    answer = llm.bind_tools(tools, tool_choice="none").invoke([question, msg, result])
    sent = wire.bodies[1]
    assert _input_types(sent) == ["message", "function_call", "function_call_output"]
    assert sent["input"][1]["call_id"] == sent["input"][2]["call_id"] == call["id"]
    assert not answer.tool_calls
    assert "14" in answer.text or "rain" in answer.text, answer.text
    _lc_usage(answer)
    assert wire.statuses == [200, 200]


def test_langchain_streams_the_call_and_continues_by_previous_response_id(stack):
    wire = Wire()
    llm = _chat(stack, wire, use_previous_response_id=True)
    bound = llm.bind_tools([lc_get_weather], tool_choice="required", parallel_tool_calls=False)
    question = HumanMessage(ASK)
    chunks = list(bound.stream([question]))
    assert wire.bodies[0]["stream"] is True and wire.bodies[0]["tool_choice"] == "required"
    opened = [c for ch in chunks for c in ch.tool_call_chunks if c["name"]]
    assert [c["name"] for c in opened] == ["lc_get_weather"] and opened[0]["args"] == ""
    fragments = [c["args"] for ch in chunks for c in ch.tool_call_chunks if not c["name"]]
    assert len(fragments) > 1  # argument deltas, not one blob
    full = chunks[0]
    for ch in chunks[1:]:
        full += ch
    (call,) = full.tool_calls
    assert call["name"] == "lc_get_weather" and json.loads("".join(fragments)) == call["args"]
    jsonschema.validate(call["args"], wire.bodies[0]["tools"][0]["parameters"])
    _lc_usage(full)
    # The answer streamed too, continuing the stored response with only the tool's result.
    result = lc_get_weather.invoke(call)
    text_chunks = list(llm.stream([question, full, result]))
    sent = wire.bodies[1]
    assert sent["previous_response_id"] == full.response_metadata["id"]
    assert _input_types(sent) == ["function_call_output"]
    assert sent["input"][0]["call_id"] == call["id"]
    answer = text_chunks[0]
    for ch in text_chunks[1:]:
        answer += ch
    assert sum(1 for ch in text_chunks if ch.text) > 1
    assert "14" in answer.text or "rain" in answer.text, answer.text
    _lc_usage(answer)


class City(BaseModel):
    name: str
    country: str


def test_langchain_structured_output_json_schema(stack):
    wire = Wire()
    structured = _chat(stack, wire).with_structured_output(
        City, method="json_schema", include_raw=True
    )
    out = structured.invoke("Name a city in France as JSON.")
    fmt = wire.bodies[0]["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True
    assert out["parsing_error"] is None and isinstance(out["parsed"], City), out
    assert out["parsed"].name.strip()
    _lc_usage(out["raw"])
    # Streamed: the parsed object from the terminal event.
    streamed = list(
        _chat(stack, wire)
        .with_structured_output(City, method="json_schema")
        .stream("Name a city in France as JSON.")
    )
    assert wire.bodies[1]["stream"] is True
    assert streamed and streamed[-1] == out["parsed"]


def test_langchain_custom_tool_under_its_grammar(stack):
    """langchain_openai.custom_tool: a freeform tool whose input the regex grammar shapes while
    sampling, its result back as a custom_tool_call_output."""
    wire = Wire()

    @custom_tool(format={"type": "grammar", "syntax": "regex", "definition": TICKET_RE})
    def open_ticket(ticket_id: str) -> str:
        """Open a support ticket; the input is the ticket id."""
        return f"opened {ticket_id}"

    llm = _chat(stack, wire)
    question = HumanMessage("My printer is broken, open a ticket.")
    msg = llm.bind_tools(
        [open_ticket],
        tool_choice={"type": "custom", "name": "open_ticket"},
        parallel_tool_calls=False,
    ).invoke([question])
    assert wire.bodies[0]["tools"][0]["type"] == "custom"
    (call,) = msg.tool_calls
    assert call["name"] == "open_ticket" and re.fullmatch(TICKET_RE, call["args"]["__arg1"])
    result = open_ticket.invoke(call)
    answer = llm.bind_tools([open_ticket], tool_choice="none").invoke([question, msg, result])
    sent = wire.bodies[1]
    assert _input_types(sent)[-2:] == ["custom_tool_call", "custom_tool_call_output"]
    assert sent["input"][-1]["output"] == f"opened {call['args']['__arg1']}"
    assert answer.text and not answer.tool_calls
    _lc_usage(answer)


# -- the official SDK's stored-response helpers ---------------------------------------------------
def test_resuming_a_stored_stream_is_refused_not_served_empty(client, stack):
    """`responses.retrieve(id, stream=True)` and `responses.stream(response_id=...)` replay a
    background response's events; toolwire has none, so they get a 400 naming the parameter (a
    JSON body read as an SSE stream was an empty stream, and the helper a RuntimeError)."""
    r = client.responses.create(model=stack.model, input="Say hi.", max_output_tokens=4)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.retrieve(r.id, stream=True)
    assert e.value.body["param"] == "stream"
    with pytest.raises(openai.BadRequestError) as e:
        with client.responses.stream(response_id=r.id, starting_after=2) as stream:
            list(stream)
    assert e.value.body["param"] == "stream"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.retrieve(r.id, include=["message.output_text.logprobs"])
    assert e.value.body["param"] == "include[0]"
    # What it can honor still reads the stored response.
    again = client.responses.retrieve(r.id, include=["reasoning.encrypted_content"])
    assert again.id == r.id and again.output_text == r.output_text
    page = client.responses.input_items.list(r.id, include=["web_search_call.results"])
    assert [i.role for i in page.data] == ["user"]
