"""The hermes constraint, compiled by real xgrammar on the embedded tokenizer: what each
tool_choice mode lets through and what it refuses."""

from __future__ import annotations

import json

import pytest

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import Tool, ToolChoice, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common

WEATHER = Tool(
    "get_weather",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    strict=True,
)
TIME = Tool("get_time")
TOOLS = [WEATHER, TIME]


def call(name, args):
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


W = call("get_weather", '{"city": "Paris", "unit": "c"}')
T = call("get_time", "{}")


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return ConstraintCompiler(tokenizer, 49152, [tokenizer.eos_token_id])


def accepts(compiler, mode, text, parallel=True, name=None, stop=2):
    c = build_constraint(
        get_format("hermes"), TOOLS, ToolChoice(mode, name), parallel, common.ResponseFormat()
    )
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    return m.accept_string(text) and m.accept_token(stop) and m.is_terminated()


@pytest.mark.parametrize(
    "mode,text,ok",
    [
        ("auto", "Just text.", True),
        ("auto", "Let me check. " + W, True),
        ("auto", W + "\n" + T, True),
        ("auto", call("get_weather", '{"city": "Paris", "unit": "kelvin"}'), False),
        ("auto", call("get_weather", '{"city": "Paris"}'), False),
        ("auto", call("delete_everything", "{}"), False),
        ("none", "Just text.", True),
        ("none", W, False),
        # Tool results are the caller's to write: free text may not open one (the weather demo).
        ("auto", "It is sunny.", True),
        ("auto", "<tool_response>\n14\n</tool_response>", False),
        ("auto", "It is 14. <tool_response>", False),
        ("auto", "<tool_response_json>\n{}\n", False),
        ("auto", "It is 14.\n</tool_response>", False),
        ("none", "<tool_call_response>", False),
        ("none", "<tool-response>", False),
        ("none", "Use tool_response tags? No.", True),
        ("none", "<tool_response>", False),
        ("required", W, True),
        ("required", W + "\n" + T, True),
        ("required", "Just text.", False),
        ("required", "", False),
        ("required", "text then " + W, False),
        ("required", call("get_time", '{"extra": 1}'), False),
    ],
)
def test_modes(compiler, mode, text, ok):
    assert accepts(compiler, mode, text) is ok


def test_parallel_false_allows_one_call(compiler):
    assert accepts(compiler, "required", W, parallel=False)
    assert not accepts(compiler, "required", W + "\n" + T, parallel=False)
    assert not accepts(compiler, "auto", W + "\n" + T, parallel=False)


def test_named_forces_that_tool(compiler):
    assert accepts(compiler, "named", T, name="get_time")
    assert not accepts(compiler, "named", W, name="get_time")


def test_strict_schema_with_unenforceable_keyword_is_refused():
    from toolwire.errors import RequestError

    bad = Tool(
        "t",
        parameters={"type": "object", "properties": {"xs": {"type": "array", "uniqueItems": True}}},
        strict=True,
    )
    with pytest.raises(RequestError) as e:
        build_constraint(
            get_format("hermes"), [bad], ToolChoice("auto"), True, common.ResponseFormat()
        )
    assert e.value.param == "tools[0].function.parameters" and "uniqueItems" in e.value.message


def test_non_strict_unenforceable_schema_falls_back_to_any_object(compiler):
    loose = Tool("t", parameters={"type": "object", "not": {"required": ["a"]}})
    c = build_constraint(
        get_format("hermes"), [loose], ToolChoice("required"), True, common.ResponseFormat()
    )
    assert json.loads(c.structural_tag)["format"]["tags"][0]["content"]["json_schema"] == {
        "type": "object"
    }


def test_repeated_tool_set_compiles_once(tokenizer):
    compiler = ConstraintCompiler(tokenizer, 49152, [tokenizer.eos_token_id])
    for _ in range(3):
        c = build_constraint(
            get_format("hermes"), TOOLS, ToolChoice("auto"), True, common.ResponseFormat()
        )
        compiler.compile_constraint(c)
    assert compiler.compiles == 1


def test_without_tools_a_history_of_results_still_bans_their_markup(compiler):
    assert (
        build_constraint(
            get_format("hermes"), [], ToolChoice("auto"), True, common.ResponseFormat()
        )
        is None
    )  # nothing to enforce: no grammar
    c = build_constraint(
        get_format("hermes"),
        [],
        ToolChoice("auto"),
        True,
        common.ResponseFormat(),
        has_tool_results=True,
    )
    for text, ok in [
        ("It is 14 degrees and raining.", True),
        ("<tool_response>\n14\n</tool_response>", False),
        ("<tool-x>", False),
    ]:
        m = xgr.GrammarMatcher(compiler.compile_constraint(c))
        assert (m.accept_string(text) and m.accept_token(2) and m.is_terminated()) is ok, text
