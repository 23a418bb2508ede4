"""The request limits as pure checks, and the gateway's in-flight cap (refused before any call)."""

from __future__ import annotations

import asyncio
import json

import pytest

from toolwire.errors import RequestError
from toolwire.gateway.metrics import Metrics
from toolwire.gateway.orchestrator import Orchestrator
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.limits import Limits, _depth, check_limits, completion_budget

SMALL = Limits(
    max_messages=2,
    max_tools=1,
    max_schema_bytes=200,
    max_schema_depth=3,
    max_enum_values=2,
    max_stop=1,
    max_stop_chars=3,
    max_concurrent_requests=1,
)


def _request(**kw) -> chat_pb2.ChatCompletionRequest:
    kw.setdefault("messages", [common.ChatMessage(role="user", content="hi")])
    return chat_pb2.ChatCompletionRequest(model="m", **kw)


def _param(req) -> tuple[str, str]:
    with pytest.raises(RequestError) as e:
        check_limits(req, SMALL)
    return e.value.param, e.value.code


def test_depth_counts_objects_and_arrays():
    assert _depth(1) == 0
    assert _depth({}) == 1
    assert _depth({"a": [1, {"b": 2}]}) == 3
    assert _depth([[[[]]]]) == 4


def test_each_limit_names_its_parameter():
    tool = lambda p: common.FunctionTool(name="f", parameters_json=json.dumps(p))  # noqa: E731
    assert _param(_request(messages=[common.ChatMessage(role="user")] * 3)) == (
        "messages",
        "too_many_messages",
    )
    assert _param(_request(tools=[tool({}), tool({})])) == ("tools", "too_many_tools")
    assert _param(_request(tools=[tool({"description": "x" * 300})])) == (
        "tools[0].function.parameters",
        "schema_too_large",
    )
    assert _param(_request(tools=[tool({"a": {"b": {"c": {}}}})])) == (
        "tools[0].function.parameters",
        "schema_too_deep",
    )
    assert _param(_request(tools=[tool({"enum": [1, 2, 3]})])) == (
        "tools[0].function.parameters",
        "enum_too_large",
    )
    assert _param(
        _request(
            response_format=common.ResponseFormat(
                type="json_schema", schema_json='{"enum": [1, 2, 3]}'
            )
        )
    ) == ("response_format.json_schema.schema", "enum_too_large")
    assert _param(_request(stop=["a", "b"])) == ("stop", "too_many_stop_sequences")
    assert _param(_request(stop=["abcd"])) == ("stop[0]", "stop_too_long")
    check_limits(_request(stop=["abc"], tools=[tool({"enum": [1, 2]})]), SMALL)  # at the limits


def test_max_tokens_must_fit_the_context_with_the_prompt():
    limits = Limits()
    assert completion_budget(_request(max_completion_tokens=90), 10, 100, limits) == (90, "request")
    with pytest.raises(RequestError) as e:
        completion_budget(_request(max_completion_tokens=91), 10, 100, limits)
    assert (e.value.param, e.value.code) == ("max_tokens", "context_length_exceeded")


def test_a_request_without_max_tokens_gets_the_server_default_or_what_the_context_has_left():
    limits = Limits(default_max_tokens=50, max_tokens_ceiling=500)
    assert completion_budget(_request(), 10, 1000, limits) == (50, "server_default")
    assert completion_budget(_request(), 980, 1000, limits) == (20, "context")
    assert completion_budget(_request(max_completion_tokens=500), 10, 1000, limits) == (
        500,
        "request",
    )
    with pytest.raises(RequestError) as e:
        completion_budget(_request(max_completion_tokens=501), 10, 1000, limits)
    assert (e.value.param, e.value.code) == ("max_tokens", "invalid_value")


def test_limits_are_flags_that_round_trip():
    import argparse

    p = argparse.ArgumentParser()
    Limits.add_arguments(p)
    assert Limits.from_args(p.parse_args(SMALL.as_flags())) == SMALL


def test_in_flight_cap_is_a_429_before_any_call():
    # No services behind it: the cap must refuse before the first RPC.
    orch = Orchestrator("127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1", [], Metrics(), SMALL)
    orch.names = ["m"]
    orch.in_flight = SMALL.max_concurrent_requests
    with pytest.raises(RequestError) as e:
        asyncio.run(orch.open(_request()))
    assert (e.value.status, e.value.code) == (429, "too_many_requests")
    assert e.value.retry_after and orch.in_flight == SMALL.max_concurrent_requests
