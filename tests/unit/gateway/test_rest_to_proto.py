"""The REST request as the SDK sends it, into the ChatService proto, and the checks on it."""

from __future__ import annotations

import pytest

from toolwire.errors import RequestError
from toolwire.gateway.openai_models import ChatCompletionRequest
from toolwire.gateway.rest_to_proto import to_proto
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.template.v1 import template_pb2
from toolwire.request.checks import check_chat_request, check_render
from toolwire.request.limits import Limits


def convert(**body):
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return to_proto(ChatCompletionRequest.model_validate(body))


def test_sdk_echoed_assistant_message_is_accepted():
    p = convert(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "audio": None,
                "function_call": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "ok"}]},
        ]
    )
    assert p.messages[1].tool_calls[0].function.name == "f"
    assert not p.messages[1].HasField("content")
    assert p.messages[2].content_parts[0].text == "ok"


def test_sampling_and_limits():
    p = convert(temperature=0.5, top_p=0.9, seed=3, stop="END", max_tokens=7)
    assert (p.temperature, round(p.top_p, 3), p.seed, list(p.stop), p.max_completion_tokens) == (
        0.5,
        0.9,
        3,
        ["END"],
        7,
    )
    assert convert(max_tokens=7, max_completion_tokens=9).max_completion_tokens == 9
    assert convert(seed=-1).seed == 2**64 - 1


@pytest.mark.parametrize(
    "body,param",
    [
        ({"n": 3}, "n"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ],
)
def test_refusals_name_the_parameter(body, param):
    with pytest.raises(RequestError) as e:
        check_chat_request(convert(**body), Limits())  # the proto check, for REST and gRPC alike
    assert e.value.param == param


def test_the_template_service_runs_the_same_checks():
    """A caller of RenderChat directly meets the gateway's checks (duplicate names here)."""
    tools = convert(tools=[{"type": "function", "function": {"name": "f"}}] * 2).tools
    with pytest.raises(RequestError) as e:
        check_render(template_pb2.RenderChatRequest(messages=convert().messages, tools=tools))
    assert e.value.param == "tools[1].function.name"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"max_tokens": 2**32}, "max_tokens"),
        ({"max_completion_tokens": 4294967296.0}, "max_completion_tokens"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
    ],
)
def test_integers_out_of_range_are_400s(body, param):
    # Found by schemathesis: they overflowed the proto's integer fields (a 500).
    import pydantic

    from toolwire.gateway.app import validation_error

    with pytest.raises(pydantic.ValidationError) as e:
        convert(**body)
    assert validation_error(e.value).param == param


FN = {"type": "function", "function": {"name": "get_time"}}
TOOLS = [FN, {"type": "function", "function": {"name": "get_weather"}}]


def test_allowed_tools_as_the_sdk_sends_them():
    p = convert(
        tools=TOOLS,
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [FN]},
        },
    )
    a = p.tool_choice.allowed_tools
    assert list(a.tool_names) == ["get_time"] and a.mode == common.ToolChoice.MODE_REQUIRED
    check_chat_request(p, Limits())


@pytest.mark.parametrize(
    "allowed,param",
    [
        ({"mode": "none", "tools": [FN]}, "tool_choice.allowed_tools.mode"),
        ({"mode": "sometimes", "tools": [FN]}, "tool_choice.allowed_tools.mode"),
        ({"mode": "auto", "tools": []}, "tool_choice.allowed_tools.tools"),
        ({"mode": "auto", "tools": [{"type": "function"}]}, "tool_choice.allowed_tools.tools[0]"),
        (
            {"mode": "auto", "tools": [FN, {"type": "function", "function": {"name": "rm"}}]},
            "tool_choice.allowed_tools.tools[1]",
        ),
    ],
)
def test_bad_allowed_tools_name_the_parameter(allowed, param):
    p = convert(tools=TOOLS, tool_choice={"type": "allowed_tools", "allowed_tools": allowed})
    with pytest.raises(RequestError) as e:
        check_chat_request(p, Limits())
    assert e.value.param == param
