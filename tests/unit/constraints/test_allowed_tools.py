"""tool_choice allowed_tools on every format: the constraint lets calls name only the subset
(auto: text or such calls; required: at least one), the extractor reads only the subset, and
the request check refuses a bad mode, an empty list and a name not in tools, naming the param."""

from __future__ import annotations

import pytest

from tests.unit.formats.test_formats import TOOLS, WRITE, T, W, _run, answer, family  # noqa: F401 (a fixture)
from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.errors import RequestError
from toolwire.formats import ToolChoice
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.checks import check_conversation

ONLY_TIME = ("get_time",)


def _accepts(family, mode, text, allowed=ONLY_TIME, parallel=True):  # noqa: F811
    _, tok, fmt, compiler = family
    choice = ToolChoice(mode, allowed=allowed)
    c = build_constraint(fmt, TOOLS, choice, parallel, common.ResponseFormat())
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    return m.accept_string(text) and m.accept_token(tok.eos_token_id) and m.is_terminated()


@pytest.mark.parametrize(
    "mode,calls,ok",
    [
        ("auto", None, True),
        ("auto", [T], True),
        ("auto", [W], False),
        ("required", [T], True),
        ("required", [T, T], True),
        ("required", None, False),
        ("required", [W], False),
        ("required", [T, W], False),
    ],
)
def test_calls_only_of_the_subset(family, mode, calls, ok):  # noqa: F811
    text = answer(family[0], "Just text.") if calls is None else WRITE[family[0]](calls)
    assert _accepts(family, mode, text) is ok


def test_whole_set_allowed_is_plain_required(family):  # noqa: F811
    write = WRITE[family[0]]
    assert _accepts(family, "required", write([W, T]), allowed=("get_weather", "get_time"))


def test_the_extractor_reads_only_the_subset(family):  # noqa: F811
    name, _, fmt, _ = family
    tools = ToolChoice("auto", allowed=ONLY_TIME).callable(TOOLS)
    text = WRITE[name]([W])
    assert _run(fmt, text, [], tools) == (text.strip(), [])
    assert _run(fmt, WRITE[name]([T]), [], tools)[1] == [("get_time", "{}")]


def _request(mode, names):
    req = chat_pb2.ChatCompletionRequest(
        messages=[common.ChatMessage(role="user", content="hi")],
        tools=[common.FunctionTool(name="get_weather"), common.FunctionTool(name="get_time")],
    )
    req.tool_choice.allowed_tools.mode = mode
    req.tool_choice.allowed_tools.tool_names.extend(names)
    return req


@pytest.mark.parametrize(
    "mode,names,param",
    [
        (common.ToolChoice.MODE_NONE, ["get_time"], "tool_choice.allowed_tools.mode"),
        (common.ToolChoice.MODE_UNSPECIFIED, ["get_time"], "tool_choice.allowed_tools.mode"),
        (common.ToolChoice.MODE_AUTO, [], "tool_choice.allowed_tools.tools"),
        (common.ToolChoice.MODE_REQUIRED, ["get_time", "rm"], "tool_choice.allowed_tools.tools[1]"),
    ],
)
def test_bad_allowed_tools_are_refused_naming_the_param(mode, names, param):
    with pytest.raises(RequestError) as e:
        check_conversation(_request(mode, names))
    assert e.value.param == param and e.value.status == 400


def test_good_allowed_tools_pass():
    check_conversation(_request(common.ToolChoice.MODE_REQUIRED, ["get_time"]))


def test_a_choice_naming_a_tool_of_the_other_kind_says_how_to_name_it():
    req = chat_pb2.ChatCompletionRequest(
        messages=[common.ChatMessage(role="user", content="hi")],
        tools=[
            common.FunctionTool(name="get_time"),
            common.FunctionTool(name="sql", type="custom"),
        ],
    )
    req.tool_choice.function_name = "sql"
    with pytest.raises(RequestError) as e:
        check_conversation(req)
    assert e.value.param == "tool_choice"
    assert "'sql' is a custom tool" in e.value.message
    assert '{"type": "custom", "custom": {"name": "sql"}}' in e.value.message
    req.tool_choice.custom_name = "get_time"
    with pytest.raises(RequestError) as e:
        check_conversation(req)
    assert '{"type": "function", "function": {"name": "get_time"}}' in e.value.message
    req.tool_choice.function_name = "nothing"
    with pytest.raises(RequestError) as e:
        check_conversation(req)
    assert e.value.message == "tool_choice names function 'nothing', which is not in tools"
