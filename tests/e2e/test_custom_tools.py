"""Custom tools through the official SDK and the gRPC ChatService against the running stack:
a regex tool named by tool_choice answers input in its regex, a Lark one input in its
grammar, streamed as custom deltas, the SDK's types parse the calls, and a past custom call
with its result renders for the next turn."""

from __future__ import annotations

import re

import grpc
import openai
import pytest
from openai.types.chat import ChatCompletionMessageCustomToolCall

from tests.tools_fixtures import WEATHER
from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc
from toolwire.grpc_gen.common.v1 import common_pb2 as common

TICKET_RE = r"[A-Z]{3}-[0-9]{2,4}"
TICKET = {
    "type": "custom",
    "custom": {
        "name": "open_ticket",
        "description": "Open a support ticket; the input is the ticket id.",
        "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": TICKET_RE}},
    },
}
# A patch of one to three + or - lines between markers (bounded, so that the small model must
# end it); the same language as PATCH_RE.
PATCH_LARK = 'start: "*** Begin\\n" line line? line? "*** End"\nline: /[+-][a-z ]{0,20}\\n/\n'
PATCH_RE = r"\*\*\* Begin\n(?:[+-][a-z ]{0,20}\n){1,3}\*\*\* End"
PATCH = {
    "type": "custom",
    "custom": {
        "name": "apply_patch",
        "description": "Apply a patch.",
        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": PATCH_LARK}},
    },
}
ASK = [{"role": "user", "content": "My printer is broken, open a ticket."}]


def _named(name: str) -> dict:
    return {"type": "custom", "custom": {"name": name}}


def test_regex_custom_tool_named_returns_input_in_the_regex(client, stack):
    r = client.chat.completions.create(
        model=stack.model,
        messages=ASK,
        tools=[WEATHER, TICKET],
        tool_choice=_named("open_ticket"),
        parallel_tool_calls=False,
        max_tokens=40,
    )
    assert len(r.choices[0].message.tool_calls) == 1
    call = r.choices[0].message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageCustomToolCall)  # the SDK's own type
    assert call.type == "custom" and call.custom.name == "open_ticket"
    assert re.fullmatch(TICKET_RE, call.custom.input), call.custom.input
    assert r.choices[0].finish_reason == "tool_calls"


def test_lark_custom_tool_streams_input_in_its_grammar(client, stack):
    kwargs = dict(
        model=stack.model,
        messages=[{"role": "user", "content": "Add a line saying hello."}],
        tools=[PATCH, TICKET],
        tool_choice=_named("apply_patch"),
        parallel_tool_calls=False,
        max_tokens=150,
        temperature=0,
    )
    first, pieces = None, []
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for ch in chunk.choices:
            for d in ch.delta.tool_calls or []:
                custom = (d.model_extra or {}).get("custom")  # the SDK keeps it untyped
                assert custom is not None and d.function is None
                if d.id:
                    first = (d.type, custom["name"])
                pieces.append(custom["input"])
    assert first == ("custom", "apply_patch")
    streamed = "".join(pieces)
    assert re.fullmatch(PATCH_RE, streamed), streamed
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    assert whole.custom.input == streamed  # greedy: the same input, streamed or not


def test_past_custom_call_and_result_render_for_the_next_turn(client, stack):
    messages = ASK + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "custom",
                    "custom": {"name": "open_ticket", "input": "PRN-42"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "ticket PRN-42 opened"},
    ]
    r = client.chat.completions.create(
        model=stack.model, messages=messages, tools=[TICKET], tool_choice="none", max_tokens=30
    )
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls


def test_bad_grammar_is_a_400_naming_the_parameter(client, stack):
    bad = {
        "type": "custom",
        "custom": {
            "name": "t",
            "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": "[a-"}},
        },
    }
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=stack.model, messages=ASK, tools=[bad], max_tokens=5)
    assert e.value.body["param"] == "tools[0].custom.format.grammar.definition"


def test_grpc_chat_service_carries_custom_tools(stack):
    req = chat_pb2.ChatCompletionRequest(
        model=stack.model,
        messages=[common.ChatMessage(role="user", content=ASK[0]["content"])],
        max_completion_tokens=40,
    )
    t = req.tools.add(type="custom", name="open_ticket")
    t.custom_format.type, t.custom_format.syntax = "grammar", "regex"
    t.custom_format.definition = TICKET_RE
    req.tool_choice.custom_name = "open_ticket"
    req.parallel_tool_calls = False
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        r = chat_pb2_grpc.ChatServiceStub(ch).CreateChatCompletion(
            req, metadata=(("authorization", f"Bearer {stack.api_key}"),), timeout=120
        )
    call = r.choices[0].message.tool_calls[0]
    assert call.type == "custom" and call.custom.name == "open_ticket"
    assert re.fullmatch(TICKET_RE, call.custom.input)
