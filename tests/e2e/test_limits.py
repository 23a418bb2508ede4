"""Each request limit, through the SDK (and once over gRPC): a 400 (413) naming the parameter,
refused before any work is queued."""

from __future__ import annotations

import json
import time

import grpc
import httpx
import openai
import pytest

from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.limits import Limits

LIMITS = Limits()  # the stack runs with the defaults for these
SAY = [{"role": "user", "content": "Hi"}]


def _tool(params: dict, name: str = "f") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": params}}


def _nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def _big_schema() -> dict:
    props = {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(700)}
    return {"type": "object", "properties": props}


CASES = [
    ("messages", {"messages": SAY * (LIMITS.max_messages + 1)}, "too_many_messages"),
    (
        "tools",
        {"tools": [_tool({"type": "object"}, f"t{i}") for i in range(LIMITS.max_tools + 1)]},
        "too_many_tools",
    ),
    ("tools[0].function.parameters", {"tools": [_tool(_big_schema())]}, "schema_too_large"),
    (
        "tools[0].function.parameters",
        {"tools": [_tool(_nested(LIMITS.max_schema_depth + 1))]},
        "schema_too_deep",
    ),
    (
        "tools[0].function.parameters",
        {
            "tools": [
                _tool(
                    {"type": "string", "enum": [str(i) for i in range(LIMITS.max_enum_values + 1)]}
                )
            ]
        },
        "enum_too_large",
    ),
    (
        "response_format.json_schema.schema",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "deep", "schema": _nested(LIMITS.max_schema_depth + 1)},
            }
        },
        "schema_too_deep",
    ),
    ("stop", {"stop": ["a", "b", "c", "d", "e"]}, "too_many_stop_sequences"),
    ("stop[1]", {"stop": ["a", "x" * (LIMITS.max_stop_chars + 1)]}, "stop_too_long"),
    ("max_tokens", {"max_tokens": 10_000_000}, "invalid_value"),  # over --max-tokens-ceiling
    ("max_tokens", {"max_tokens": LIMITS.max_tokens_ceiling}, "context_length_exceeded"),
]


@pytest.mark.parametrize("param,extra,code", CASES, ids=[c[2] + ":" + c[0] for c in CASES])
def test_limit_is_a_400_naming_the_parameter(client, stack, param, extra, code):
    body = {"model": stack.model, "messages": SAY, **extra}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**body)
    err = e.value.body
    assert (err["param"], err["code"]) == (param, code), err
    assert stack.health()["decode_active_requests"] == 0  # nothing was queued


def test_body_over_the_limit_is_a_413(stack):
    body = json.dumps(
        {
            "model": stack.model,
            "messages": [{"role": "user", "content": "x" * LIMITS.max_body_bytes}],
        }
    )
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        content=body,
        timeout=30,
        headers={"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


# Sixty properties with bounded-repetition patterns: several seconds of xgrammar compile.
SLOW = {
    "type": "object",
    "required": [f"p{i}" for i in range(60)],
    "properties": {
        f"p{i}": {"type": "string", "pattern": "[a-z]{1,30}@[a-z]{1,30}"} for i in range(60)
    },
}


def test_a_schema_that_compiles_too_long_is_refused_and_stalls_no_one(client, stack):
    limit = stack.limits["grammar_timeout"]
    t0 = time.monotonic()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=stack.model, messages=SAY, tools=[_tool(SLOW)], tool_choice="required"
        )
    assert (e.value.body["param"], e.value.body["code"]) == ("tools", "schema_too_complex")
    assert limit <= time.monotonic() - t0 < limit + 5
    # The other worker serves the next request while the stuck one is replaced.
    t0 = time.monotonic()
    r = client.chat.completions.create(
        model=stack.model,
        messages=SAY,
        max_tokens=2,
        tools=[_tool({"type": "object", "properties": {"q": {"type": "string"}}})],
        tool_choice="required",
    )
    assert r.choices[0].finish_reason == "length"
    assert time.monotonic() - t0 < limit
    # The same schema again is refused from the cache, without a worker.
    t0 = time.monotonic()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=stack.model, messages=SAY, tools=[_tool(SLOW)], tool_choice="required"
        )
    assert time.monotonic() - t0 < 1


def test_limits_hold_over_grpc_too(stack):
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = chat_pb2_grpc.ChatServiceStub(ch)
        req = chat_pb2.ChatCompletionRequest(
            model=stack.model,
            stop=["a"] * 5,
            messages=[common.ChatMessage(role="user", content="Hi")],
        )
        with pytest.raises(grpc.RpcError) as e:
            stub.CreateChatCompletion(req, metadata=[("authorization", f"Bearer {stack.api_key}")])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    md = dict(e.value.trailing_metadata())
    assert md["toolwire-param"] == "stop"


def _capped(stack) -> float:
    """The gateway's count of requests ended by --default-max-tokens."""
    text = httpx.get(f"http://127.0.0.1:{stack.port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("toolwire_request_length_capped_total{") and (
            'limit="server_default"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("the gateway exports no server_default length-capped series")


def test_a_reply_without_max_tokens_ends_at_the_server_default_and_is_counted(client, stack):
    """A reply that cannot end within --default-max-tokens (a strict string of at least
    30,000 characters, more than 512 tokens of any length can write): the server's default
    ends it, with finish_reason length, and the length-capped counter says so."""
    long_text = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 30000}},
        "required": ["text"],
        "additionalProperties": False,
    }
    before = _capped(stack)
    completion = client.chat.completions.create(
        model=stack.model,
        messages=[{"role": "user", "content": "Write a long essay about lighthouses."}],
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "essay", "strict": True, "schema": long_text},
        },
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == LIMITS.default_max_tokens
    assert _capped(stack) == before + 1
