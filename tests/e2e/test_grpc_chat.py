"""The gRPC ChatService, called with the generated client, as an internal service would."""

from __future__ import annotations

import json

import grpc
import pytest

from tests.tools_fixtures import WEATHER
from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc
from toolwire.grpc_gen.common.v1 import common_pb2 as common


@pytest.fixture(scope="module")
def stub(stack):
    ch = grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")
    yield chat_pb2_grpc.ChatServiceStub(ch)
    ch.close()


def _request(stack) -> chat_pb2.ChatCompletionRequest:
    fn = WEATHER["function"]
    return chat_pb2.ChatCompletionRequest(
        model=stack.model,
        temperature=0,
        include_usage=True,
        messages=[common.ChatMessage(role="user", content="Weather in Paris?")],
        tools=[
            common.FunctionTool(
                name=fn["name"],
                description=fn["description"],
                parameters_json=json.dumps(fn["parameters"]),
                strict=True,
            )
        ],
        tool_choice=common.ToolChoice(mode=common.ToolChoice.MODE_REQUIRED),
    )


def _auth(stack):
    return (("authorization", f"Bearer {stack.api_key}"),)


def test_unary_tool_call(stub, stack):
    r = stub.CreateChatCompletion(_request(stack), metadata=_auth(stack), timeout=300)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and not choice.message.HasField("content")
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(json.loads(call.function.arguments)["location"], str)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_tool_call_matches_unary(stub, stack):
    chunks = list(stub.StreamChatCompletion(_request(stack), metadata=_auth(stack), timeout=300))
    assert chunks[0].choices[0].delta.role == "assistant"
    args: dict[int, str] = {}
    for c in chunks:
        for ch in c.choices:
            for t in ch.delta.tool_calls:
                args[t.index] = args.get(t.index, "") + t.arguments
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].HasField("usage") and not chunks[-1].choices
    unary = stub.CreateChatCompletion(_request(stack), metadata=_auth(stack), timeout=300)
    # The same prompt again: its prefix came from the decode engine's prefix cache.
    assert 0 < unary.usage.cached_tokens < unary.usage.prompt_tokens
    assert [args[i] for i in sorted(args)] == [
        c.function.arguments for c in unary.choices[0].message.tool_calls
    ]


def test_errors_map_to_grpc_status(stub, stack):
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(_request(stack), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bad = _request(stack)
    bad.model = "nope"
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(bad, metadata=_auth(stack), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    bad = _request(stack)
    bad.tool_choice.function_name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(bad, metadata=_auth(stack), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(e.value.trailing_metadata())["toolwire-param"] == "tool_choice"


def _streamed(stub, stack, req) -> tuple[str, list[str], int]:
    """(content, each call's arguments, chunks carrying content or arguments) of a stream."""
    content, args, events = "", {}, 0
    for c in stub.StreamChatCompletion(req, metadata=_auth(stack), timeout=300):
        for ch in c.choices:
            d = ch.delta
            if d.content or any(t.arguments for t in d.tool_calls):
                events += 1
            content += d.content
            for t in d.tool_calls:
                args[t.index] = args.get(t.index, "") + t.arguments
    return content, [args[i] for i in sorted(args)], events


def test_a_stream_interval_sends_the_same_output_in_fewer_chunks(stub, stack):
    """Per request over gRPC (chat.v1 StreamInterval): held in the decode mux, the same seeded
    prose and the same tool-call arguments arrive in fewer chunks."""
    prose = chat_pb2.ChatCompletionRequest(
        model=stack.model,
        temperature=1.0,
        seed=11,
        max_completion_tokens=24,
        messages=[common.ChatMessage(role="user", content="Tell me about the sea.")],
    )
    for req in (prose, _request(stack)):
        plain = _streamed(stub, stack, req)
        held = chat_pb2.ChatCompletionRequest()
        held.CopyFrom(req)
        held.stream_interval.tokens = 4
        held.stream_interval.ms = 1000  # the count, not the deadline, decides here
        interval = _streamed(stub, stack, held)
        assert interval[:2] == plain[:2] and (plain[0] or plain[1])
        # 24 sampled tokens of prose: 1 + 23 held in fours. The tool call's text is mostly
        # forced (jump-forward sends it in blocks), so there it can only be no more.
        assert interval[2] < plain[2] if req is prose else interval[2] <= plain[2]


def test_a_stream_interval_out_of_bounds_is_refused(stub, stack):
    bad = _request(stack)
    bad.stream_interval.tokens = 100_000
    with pytest.raises(grpc.RpcError) as e:
        list(stub.StreamChatCompletion(bad, metadata=_auth(stack), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "stream_interval.tokens" in e.value.details()
