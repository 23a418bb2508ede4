"""A Responses API create body, as Codex, the Agents SDK and the openai SDK send it, into the
ChatCompletionRequest proto and the Turn (gateway/responses/request.py, to_chat.py): what each
field becomes, and that every refusal names its parameter in the body's own path form."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from openai.types.responses import (
    CustomToolParam,
    FunctionToolParam,
    NamespaceToolParam,
    ResponseInputParam,
    WebSearchToolParam,
)
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

from toolwire.errors import RequestError
from toolwire.gateway.app import validation_error
from toolwire.gateway.responses.request import ResponseCreateRequest
from toolwire.gateway.responses.to_chat import decode_reasoning, encode_reasoning, to_chat
from toolwire.gateway.responses.tools import default_strict
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.checks import check_chat_request
from toolwire.request.limits import Limits

OBJ = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
CMD = {
    "type": "object",
    "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
    "required": ["cmd"],  # workdir optional: not OpenAI-strict
}
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
LARK = 'start: "*** Begin Patch" /(.|\\n)*/'
USER = {"role": "user", "content": "hi"}


def request(**body: Any) -> ResponseCreateRequest:
    body.setdefault("model", "m")
    body.setdefault("input", "hi")
    return ResponseCreateRequest.model_validate(body)


def convert(history=(), resolve_item=None, drop=False, tool_format=None, **body):
    return to_chat(
        request(**body),
        history,
        resolve_item=resolve_item,
        drop_hosted_tools=drop,
        tool_format=tool_format,
    )


def refused(**body) -> RequestError:
    drop = body.pop("drop", False)
    with pytest.raises(RequestError) as e:
        convert(drop=drop, **body)
    return e.value


def function(name: str, parameters=CITY, **kw) -> FunctionToolParam:
    return {"type": "function", "name": name, "parameters": parameters, **kw}  # type: ignore[typeddict-item]


def codex_body() -> ResponseCreateParamsStreaming:
    """A Codex CLI turn: instructions, a developer and a user message, function tools with
    `strict: false`, an MCP namespace, the apply_patch grammar tool and web_search."""
    exec_command: FunctionToolParam = {
        "type": "function",
        "name": "exec_command",
        "description": "Runs a command",
        "strict": False,
        "parameters": CMD,
    }
    mcp: NamespaceToolParam = {
        "type": "namespace",
        "name": "mcp__deepwiki__",
        "description": "DeepWiki",
        "tools": [{"type": "function", "name": "read_wiki", "parameters": OBJ, "strict": False}],
    }
    apply_patch: CustomToolParam = {
        "type": "custom",
        "name": "apply_patch",
        "description": "Use the `apply_patch` tool to edit files.",
        "format": {"type": "grammar", "syntax": "lark", "definition": LARK},
    }
    web: WebSearchToolParam = {"type": "web_search"}
    items: ResponseInputParam = [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "<permissions>"}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix"}]},
    ]
    return {
        "model": "m",
        "instructions": "You are Codex.",
        "input": items,
        "tools": [exec_command, mcp, apply_patch, web],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1",
        "service_tier": "auto",
        "client_metadata": {"x-codex-installation-id": "abc"},  # type: ignore[typeddict-unknown-key]
    }


# -- the clients' requests -------------------------------------------------------------------
def test_codex_request_refuses_web_search_unless_hosted_tools_are_dropped():
    err = refused(**codex_body())
    assert (err.param, err.code) == ("tools[3].type", "unsupported_parameter")
    assert "--drop-hosted-tools" in err.message

    proto, turn = convert(drop=True, **codex_body())
    assert [(m.role, m.content) for m in proto.messages] == [
        ("system", "You are Codex."),
        ("developer", "<permissions>"),
        ("user", "fix"),
    ]
    assert [(t.name, t.type, t.strict) for t in proto.tools] == [
        ("exec_command", "", False),
        ("mcp__deepwiki__read_wiki", "", False),
        ("apply_patch", "custom", False),
    ]
    assert proto.tools[2].custom_format.definition == LARK
    assert proto.tool_choice.mode == common.ToolChoice.MODE_AUTO
    assert proto.parallel_tool_calls is True and proto.reasoning_effort == "medium"
    assert turn.namespaces == {"mcp__deepwiki__read_wiki": ("mcp__deepwiki__", "read_wiki")}
    assert turn.dropped_tools == ("web_search",)
    assert [t["type"] for t in turn.tools] == ["function", "namespace", "custom"]
    assert turn.encrypted_reasoning and turn.tool_choice == "auto" and turn.parallel_tool_calls
    check_chat_request(proto, Limits())  # the orchestrator's own checks pass it


def test_agents_sdk_request_with_strict_tools_and_a_json_schema_output():
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    proto, turn = convert(
        instructions="Be brief.",
        input=[{"role": "user", "content": "weather in Paris?"}],
        include=[],
        tools=[function("get_weather", strict=True), function("no_args", OBJ, strict=True)],
        text={
            "format": {
                "type": "json_schema",
                "name": "final_output",
                "schema": schema,
                "strict": True,
            }
        },
    )
    assert [t.strict for t in proto.tools] == [True, True]
    rf = proto.response_format
    assert (rf.type, rf.name, rf.strict) == ("json_schema", "final_output", True)
    assert turn.text == {
        "format": {"type": "json_schema", "name": "final_output", "schema": schema, "strict": True},
        "verbosity": "medium",
    }
    assert not turn.encrypted_reasoning and turn.tool_choice == "auto"
    check_chat_request(proto, Limits())


def test_sdk_nulls_and_replayed_output_fields_are_accepted():
    proto, turn = convert(
        input=[
            USER,
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "phase": "final_answer",
                "content": [
                    {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
                ],
            },
            USER,
        ],
        tools=[
            {
                "type": "function",
                "name": "f",
                "description": None,
                "parameters": None,
                "strict": None,
            }
        ],
    )
    assert proto.messages[1].role == "assistant" and proto.messages[1].content == "Hello"
    assert proto.tools[0].parameters_json == "" and proto.tools[0].strict  # no parameters: {}
    assert turn.tools[0]["description"] is None and turn.tools[0]["strict"] is True


# -- the conversation ------------------------------------------------------------------------
def test_two_turn_stateless_history_with_a_call_and_its_output():
    reasoning = {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "look it up"}],
        "encrypted_content": encode_reasoning("look it up"),
    }
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
        "status": "completed",
    }
    output = {"type": "function_call_output", "call_id": "call_1", "output": '{"temp_c": 12}'}
    tools = [function("get_weather")]
    proto, turn = convert(input=[USER, reasoning, call, output], tools=tools)
    user, assistant, tool = proto.messages
    assert assistant.role == "assistant" and assistant.reasoning_content == "look it up"
    assert not assistant.HasField("content")
    (c,) = assistant.tool_calls
    assert (c.id, c.type, c.function.name, c.function.arguments) == (
        "call_1",
        "function",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert (tool.role, tool.tool_call_id, tool.content) == ("tool", "call_1", '{"temp_c": 12}')
    assert turn.message_params == ("input[0]", "input[1]", "input[3]")

    # The same conversation continued with previous_response_id: the stored items come first.
    again, _ = convert(history=[USER, reasoning, call], input=[output], tools=tools)
    assert list(again.messages) == list(proto.messages)


def test_custom_tool_call_and_its_output():
    patch: CustomToolParam = {
        "type": "custom",
        "name": "apply_patch",
        "format": {"type": "grammar", "syntax": "lark", "definition": LARK},
    }
    proto, _ = convert(
        input=[
            USER,
            {
                "type": "custom_tool_call",
                "call_id": "c1",
                "name": "apply_patch",
                "input": "*** Begin Patch",
            },
            {
                "type": "custom_tool_call_output",
                "call_id": "c1",
                "output": [{"type": "input_text", "text": "Done!"}],
            },
        ],
        tools=[patch],
        tool_choice={"type": "custom", "name": "apply_patch"},
    )
    call = proto.messages[1].tool_calls[0]
    assert (call.type, call.custom.name, call.custom.input) == (
        "custom",
        "apply_patch",
        "*** Begin Patch",
    )
    assert (proto.messages[2].role, proto.messages[2].tool_call_id) == ("tool", "c1")
    assert proto.messages[2].content == "Done!"
    assert proto.tool_choice.custom_name == "apply_patch"
    check_chat_request(proto, Limits())


def test_assistant_items_join_while_in_order():
    def reasoning(text):
        return {
            "type": "reasoning",
            "id": "r",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": text}],
        }

    def say(text):
        return {"role": "assistant", "content": text}

    def call(i):
        return {
            "type": "function_call",
            "call_id": f"c{i}",
            "name": "get_weather",
            "arguments": "{}",
        }

    def out(i):
        return {"type": "function_call_output", "call_id": f"c{i}", "output": "ok"}

    proto, _ = convert(
        input=[USER, reasoning("a"), say("checking"), call(1), call(2), out(1), out(2)],
        tools=[function("get_weather")],
    )
    assert [m.role for m in proto.messages] == ["user", "assistant", "tool", "tool"]
    a = proto.messages[1]
    assert (a.reasoning_content, a.content, [c.id for c in a.tool_calls]) == (
        "a",
        "checking",
        ["c1", "c2"],
    )

    # A second reasoning, or a message after a call, starts the next assistant message.
    proto, turn = convert(
        input=[USER, reasoning("a"), say("x"), reasoning("b"), call(1), say("y"), out(1)],
        tools=[function("get_weather")],
    )
    assert [
        (m.role, m.reasoning_content, m.content, len(m.tool_calls)) for m in proto.messages
    ] == [
        ("user", "", "hi", 0),
        ("assistant", "a", "x", 0),
        ("assistant", "b", "", 1),
        ("assistant", "", "y", 0),
        ("tool", "", "ok", 0),
    ]
    assert turn.call_params == {(2, 0): "input[4]"}


def test_instructions_string_input_and_reasoning_context_current_turn():
    proto, _ = convert(input="hello")
    assert [(m.role, m.content) for m in proto.messages] == [("user", "hello")]
    # Parts are one string (templates read content as a string); a refusal is the refusal.
    parts = [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
    said = [{"type": "output_text", "text": "no:", "annotations": []}]
    proto, _ = convert(
        input=[
            {"role": "user", "content": parts},
            {"role": "assistant", "content": said + [{"type": "refusal", "refusal": "I can't"}]},
        ]
    )
    assert [(m.content, m.refusal) for m in proto.messages] == [("ab", ""), ("no:", "I can't")]
    assert not proto.messages[0].content_parts

    history = [
        USER,
        {
            "type": "reasoning",
            "id": "r1",
            "summary": [],
            "encrypted_content": encode_reasoning("old"),
        },
        {"role": "assistant", "content": "first"},
    ]
    now = [
        {"role": "user", "content": "again"},
        {
            "type": "reasoning",
            "id": "r2",
            "summary": [],
            "encrypted_content": encode_reasoning("new"),
        },
        {"role": "assistant", "content": "second"},
    ]
    kept, _ = convert(history=history, input=now, instructions="sys")
    assert [m.reasoning_content for m in kept.messages] == ["", "", "old", "", "new"]
    assert kept.messages[0].role == "system"
    trimmed, _ = convert(history=history, input=now, reasoning={"context": "current_turn"})
    assert [m.reasoning_content for m in trimmed.messages] == ["", "", "", "new"]


def test_item_reference_is_resolved_by_the_caller():
    stored = {
        "id": "msg_9",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "from store"}],
    }
    proto, _ = convert(
        input=[{"type": "item_reference", "id": "msg_9"}, {"id": "msg_9"}],
        resolve_item={"msg_9": stored}.get,
    )
    assert [m.content for m in proto.messages] == ["from store", "from store"]
    err = refused(input=[USER, {"type": "item_reference", "id": "msg_0"}])
    assert (err.status, err.param, err.code) == (404, "input[1].id", "not_found")


def test_encrypted_reasoning_round_trip_and_refusal():
    for text in ("", "plain", 'ünïcode ✓ \n {"json": 1}'):
        blob = encode_reasoning(text)
        assert "=" not in blob and "+" not in blob and "/" not in blob
        assert decode_reasoning(blob) == text
    for bad in ("gAAAAABnotours", "", "e30", encode_reasoning("x")[:-2], "☃"):
        with pytest.raises(ValueError):
            decode_reasoning(bad)
    err = refused(
        input=[
            USER,
            {"type": "reasoning", "id": "r", "summary": [], "encrypted_content": "gAAAAB1x"},
        ]
    )
    assert (err.param, err.code) == ("input[1].encrypted_content", "invalid_value")


def test_history_calls_with_a_namespace_take_the_flat_name():
    ns: NamespaceToolParam = {
        "type": "namespace",
        "name": "files",
        "description": "",
        "tools": [{"type": "function", "name": "read", "parameters": OBJ}],
    }
    call = {
        "type": "function_call",
        "call_id": "c",
        "namespace": "files",
        "name": "read",
        "arguments": "{}",
    }
    out = {"type": "function_call_output", "call_id": "c", "output": "x"}
    proto, turn = convert(history=[USER, call], input=[out], tools=[ns])
    assert proto.messages[1].tool_calls[0].function.name == "files__read"
    assert proto.tools[0].name == "files__read" and turn.namespaces == {
        "files__read": ("files", "read")
    }


# -- tools and tool_choice -------------------------------------------------------------------
def test_strict_default_is_strict_when_compatible():
    assert default_strict(CITY) and default_strict(OBJ) and default_strict(None)
    assert not default_strict(CMD)  # an optional property
    assert not default_strict({**CITY, "additionalProperties": True})
    assert not default_strict(
        {
            "type": "object",
            "properties": {"d": {"type": "string", "format": "date"}},
            "required": ["d"],
            "additionalProperties": False,
        }
    )
    nested = {
        "type": "object",
        "properties": {"p": {"type": "object", "properties": {"x": {"type": "integer"}}}},
        "required": ["p"],
        "additionalProperties": False,
    }
    assert not default_strict(nested)  # the inner object is open
    quote = {
        "type": "object",
        "properties": {'a"b': {"type": "string"}},
        "required": ['a"b'],
        "additionalProperties": False,
    }
    assert default_strict(quote) and not default_strict(
        quote, "deepseek_v32"
    )  # DSML cannot write it

    proto, turn = convert(
        tools=[
            function("a"),
            function("b", CMD),
            function("c", CMD, strict=True),
            function("d", CITY, strict=False),
        ],
    )
    assert [t.strict for t in proto.tools] == [True, False, True, False]
    assert [t["strict"] for t in turn.tools] == [True, False, True, False]


def test_allowed_tools_and_hosted_entries():
    tools = [
        function("a"),
        function("b"),
        {"type": "custom", "name": "c"},
        {"type": "image_generation"},
    ]
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [
            {"type": "function", "name": "a"},
            {"type": "image_generation"},
            {"type": "custom", "name": "c"},
        ],
    }
    err = refused(tools=tools, tool_choice=choice, drop=False)
    assert err.param == "tools[3].type"  # the hosted tool itself, first
    err = refused(tools=tools[:3], tool_choice=choice)
    assert (err.param, err.code) == ("tool_choice.tools[1]", "unsupported_parameter")

    proto, turn = convert(tools=tools, tool_choice=choice, drop=True)
    allowed = proto.tool_choice.allowed_tools
    assert (allowed.mode, list(allowed.tool_names)) == (common.ToolChoice.MODE_REQUIRED, ["a", "c"])
    assert turn.tool_choice["tools"] == [
        {"type": "function", "name": "a"},
        {"type": "custom", "name": "c"},
    ]
    assert turn.dropped_tools == ("image_generation",)

    # An unknown name is the check's to refuse, named at its place in this body.
    err = refused(
        tools=tools,
        drop=True,
        tool_choice={
            **choice,
            "tools": [{"type": "image_generation"}, {"type": "function", "name": "zz"}],
        },
    )
    assert err.param == "tool_choice.tools[1]" and "tool_choice.tools[1]" in err.message
    err = refused(tools=tools, drop=True, tool_choice={**choice, "mode": "bogus"})
    assert err.param == "tool_choice.mode"


def test_tool_choice_without_tools_left_after_dropping():
    proto, turn = convert(tools=[{"type": "web_search_preview"}], tool_choice="auto", drop=True)
    assert not proto.tools and proto.tool_choice.WhichOneof("choice") is None
    assert turn.tools == [] and turn.tool_choice == "auto"
    err = refused(tools=[{"type": "web_search_preview"}], tool_choice="required", drop=True)
    assert err.param == "tool_choice" and "web_search_preview" in err.message


def test_named_choices_and_echoes():
    tools = [function("f"), {"type": "custom", "name": "c"}]
    proto, turn = convert(
        tools=tools, tool_choice={"type": "function", "name": "f"}, parallel_tool_calls=False
    )
    assert proto.tool_choice.function_name == "f" and turn.tool_choice == {
        "type": "function",
        "name": "f",
    }
    assert proto.HasField("parallel_tool_calls") and not proto.parallel_tool_calls
    assert turn.parallel_tool_calls is False
    _, turn = convert(tools=tools)
    assert turn.parallel_tool_calls is True and turn.tool_choice == "auto"
    err = refused(tools=tools, tool_choice={"type": "custom", "name": "f"})  # f is a function
    assert err.param == "tool_choice"


def test_sampling_limits_and_formats():
    proto, turn = convert(
        temperature=0.2,
        top_p=0.5,
        max_output_tokens=77,
        reasoning={"effort": "none"},
        text={"format": {"type": "json_object"}},
    )
    assert (round(proto.temperature, 3), proto.top_p, proto.max_completion_tokens) == (0.2, 0.5, 77)
    assert proto.reasoning_effort == "none" and proto.response_format.type == "json_object"
    assert turn.text["format"] == {"type": "json_object"}
    proto, _ = convert(
        text={"format": {"type": "json_schema", "name": "x", "schema": CITY, "description": "d"}}
    )
    assert proto.response_format.type == "json_schema" and not proto.response_format.strict
    proto, turn = convert(
        text={"format": {"type": "text"}, "verbosity": "medium"}, verbosity="medium"
    )
    assert proto.response_format.type == "" and turn.text == {
        "format": {"type": "text"},
        "verbosity": "medium",
    }
    assert not proto.HasField("max_completion_tokens") and not convert()[0].HasField("temperature")


# -- refusals --------------------------------------------------------------------------------
IMAGE = {"type": "input_image", "image_url": "https://x/y.png", "detail": "auto"}
CALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({"background": True}, "background", "unsupported_parameter"),
        ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
        (
            {"context_management": [{"type": "compaction"}]},
            "context_management",
            "unsupported_parameter",
        ),
        (
            {"moderation": {"model": "omni-moderation-latest"}},
            "moderation",
            "unsupported_parameter",
        ),
        ({"top_logprobs": 5}, "top_logprobs", "unsupported_parameter"),
        ({"truncation": "auto"}, "truncation", "unsupported_value"),
        ({"service_tier": "flex"}, "service_tier", "unsupported_value"),
        (
            {"prompt_cache_options": {"prewarm": True}},
            "prompt_cache_options.prewarm",
            "unsupported_value",
        ),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
            "unsupported_value",
        ),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options", None),
        (
            {"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]},
            "include[1]",
            "unsupported_value",
        ),
        ({"include": ["bogus"]}, "include[0]", "invalid_value"),
        ({"text": {"verbosity": "low"}}, "text.verbosity", "unsupported_value"),
        ({"verbosity": "high"}, "verbosity", "unsupported_value"),
        ({"reasoning": {"summary": "detailed"}}, "reasoning.summary", "unsupported_value"),
        (
            {"reasoning": {"generate_summary": "concise"}},
            "reasoning.generate_summary",
            "unsupported_value",
        ),
        ({"reasoning": {"context": "all_turns"}}, "reasoning.context", "unsupported_value"),
        ({"reasoning": {"mode": "pro"}}, "reasoning.mode", "unsupported_value"),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort", "invalid_value"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "invalid_value"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "invalid_value"),
        ({"max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
        ({"temperature": 3}, "temperature", "invalid_value"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "see"}, IMAGE]}
                ]
            },
            "input[0].content[1].type",
            "unsupported_parameter",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]},
            "input[0].content[0].type",
            "unsupported_parameter",
        ),
        (
            {
                "input": [
                    USER,
                    CALL,
                    {"type": "function_call_output", "call_id": "c1", "output": [IMAGE]},
                ],
                "tools": [function("f")],
            },
            "input[2].output[0].type",
            "unsupported_parameter",
        ),
        (
            {
                "input": [
                    USER,
                    {
                        "type": "computer_call",
                        "call_id": "x",
                        "id": "y",
                        "action": {},
                        "pending_safety_checks": [],
                        "status": "completed",
                    },
                ]
            },
            "input[1].type",
            "unsupported_parameter",
        ),
        (
            {"input": [USER, {"type": "compaction", "encrypted_content": "x"}]},
            "input[1].type",
            "unsupported_parameter",
        ),
        (
            {"input": [USER, {"type": "function_call_output", "call_id": "nope", "output": "x"}]},
            "input[1].call_id",
            None,
        ),
        (
            {"input": [USER, {"type": "function_call_output", "output": "x"}]},
            "input[1].call_id",
            "missing_required_parameter",
        ),
        ({"input": [USER, CALL, USER], "tools": [function("f")]}, "input[1].call_id", None),
        (
            {
                "input": [
                    USER,
                    {**CALL, "arguments": "[1]"},
                    {"type": "function_call_output", "call_id": "c1", "output": "x"},
                ],
                "tools": [function("f")],
            },
            "input[1].arguments",
            None,
        ),
        ({"input": []}, "input", "invalid_value"),
        ({"tools": [function("f", **{"async": True})]}, "tools[0].async", "unsupported_parameter"),
        (
            {"tools": [function("f", allowed_callers=["programmatic"])]},
            "tools[0].allowed_callers",
            "unsupported_parameter",
        ),
        (
            {"tools": [{"type": "mcp", "server_label": "deepwiki", "server_url": "https://x"}]},
            "tools[0].type",
            "unsupported_parameter",
        ),
        ({"tools": [{"type": "frobnicate"}]}, "tools[0].type", "invalid_value"),
        ({"tools": [function("f bad")]}, "tools[0].name", "invalid_value"),
        ({"tools": [function("f"), function("f")]}, "tools[1].name", None),
        (
            {
                "tools": [
                    function("a__b"),
                    {"type": "namespace", "name": "a", "description": "", "tools": [function("b")]},
                ]
            },
            "tools[1].tools[0].name",
            None,
        ),
        (
            {
                "tools": [
                    {
                        "type": "namespace",
                        "name": "n" * 40,
                        "description": "",
                        "tools": [function("t" * 30)],
                    }
                ]
            },
            "tools[0].tools[0].name",
            "invalid_value",
        ),
        (
            {
                "tools": [
                    {
                        "type": "namespace",
                        "name": "my.server",
                        "description": "",
                        "tools": [function("t")],
                    }
                ]
            },
            "tools[0].name",
            "invalid_value",
        ),
        (
            {
                "tools": [
                    {
                        "type": "custom",
                        "name": "c",
                        "format": {"type": "grammar", "syntax": "ebnf", "definition": "x"},
                    }
                ]
            },
            "tools[0].format.syntax",
            "invalid_value",
        ),
        (
            {"tools": [function("f")], "tool_choice": {"type": "web_search_preview"}},
            "tool_choice",
            "unsupported_parameter",
        ),
        (
            {"tools": [function("f")], "tool_choice": {"type": "mcp", "server_label": "x"}},
            "tool_choice",
            "unsupported_parameter",
        ),
        (
            {"tools": [function("f")], "tool_choice": {"type": "function", "name": "g"}},
            "tool_choice",
            None,
        ),
        ({"tool_choice": "required"}, "tool_choice", None),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
        (
            {"text": {"format": {"type": "json_schema", "name": "bad name", "schema": CITY}}},
            "text.format.name",
            "invalid_value",
        ),
        ({"frobnicate": 1}, "frobnicate", "unsupported_parameter"),
    ],
)
def test_every_refusal_names_its_parameter(body, param, code):
    err = refused(**body)
    assert err.param == param, err.message
    if code is not None:
        assert err.code == code
    assert "messages" not in err.message and "function.name" not in err.message, err.message


def test_the_orchestrators_checks_are_translated():
    """What the orchestrator refuses later (sizes, strict schemas, the sampling ranges) comes
    back in the body's names through Turn.translate."""
    schema = {**CITY, "properties": {"city": {"type": "string", "format": "date"}}}
    proto, turn = convert(
        input=[USER],
        tools=[
            function("ok"),
            {
                "type": "namespace",
                "name": "ns",
                "description": "",
                "tools": [function("f", schema, strict=True)],
            },
        ],
    )
    with pytest.raises(RequestError) as e:
        check_chat_request(proto, Limits())
    err = turn.translate(e.value)
    assert err.param == "tools[1].tools[0].parameters"
    assert "tools[1].tools[0].parameters" in err.message and "function" not in err.message
    assert err.code == e.value.code == "unsupported_schema_keyword"

    proto, turn = convert(
        text={"format": {"type": "json_schema", "name": "x", "schema": schema, "strict": True}}
    )
    with pytest.raises(RequestError) as e:
        check_chat_request(proto, Limits())
    assert turn.translate(e.value).param == "text.format.schema"

    proto, turn = convert(input=[USER] * 3, tools=[function("f")] * 1)
    with pytest.raises(RequestError) as e:
        check_chat_request(proto, Limits(max_messages=2))
    assert turn.translate(e.value).param == "input"
    template_error = RequestError(
        "This model's maximum context length is 8 tokens; the messages take 9.", param="messages"
    )
    assert turn.translate(template_error).param == "input"
    history_error = RequestError("x", param="messages[0].content")
    _, turn = convert(history=[USER], input=[USER], instructions="s")
    assert turn.translate(history_error).param == "instructions"
    assert (
        turn.translate(RequestError("x", param="messages[1].role")).param == "previous_response_id"
    )
    assert turn.translate(RequestError("x", param="messages[2].role")).param == "input[0].role"
    assert turn.translate(RequestError("x", param="messages[2].tool_call_id")).param == (
        "input[0].call_id"
    )


def test_unknown_top_level_key_refused_and_verbosity_tolerated():
    err = refused(**{"store": False, "frobnicate": True})
    assert (err.param, err.code, err.message) == (
        "frobnicate",
        "unsupported_parameter",
        "Unrecognized request argument supplied: frobnicate",
    )
    # responses.parse() sends `verbosity` top level: medium (the default) is what happens anyway.
    _, turn = convert(verbosity="medium")
    assert turn.text["verbosity"] == "medium"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"input": [USER, USER, 5]}, "input[2]"),
        (
            {"input": [USER, {"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[1].call_id",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "input[0].content[0].text",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_text", "text": 1}],
                    }
                ]
            },
            "input[0].output[0].text",
        ),
        ({"input": 5}, "input"),
        ({"tools": [{"type": "function", "name": "f", "bogus": 1}]}, "tools[0].bogus"),
        (
            {
                "tools": [
                    {"type": "custom", "name": "c", "format": {"type": "grammar", "syntax": "lark"}}
                ]
            },
            "tools[0].format.definition",
        ),
        (
            {
                "tools": [
                    {
                        "type": "namespace",
                        "name": "n",
                        "tools": [{"type": "function", "name": "f", "strict": "x"}],
                    }
                ]
            },
            "tools[0].tools[0].strict",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "function"}}, "tool_choice.name"),
        (
            {"text": {"format": {"type": "json_schema", "name": "a", "schema": 1}}},
            "text.format.schema",
        ),
        ({"reasoning": {"effort": "low", "bogus": 1}}, "reasoning.bogus"),
        ({"stream_options": {"include_usage": True}}, "stream_options.include_usage"),
        ({"max_output_tokens": 2**32}, "max_output_tokens"),
    ],
)
def test_validation_errors_name_the_parameter(body, param):
    with pytest.raises(pydantic.ValidationError) as e:
        request(**body)
    err = validation_error(e.value, ResponseCreateRequest)
    assert err.param == param and "_pick" not in err.message, err.message
