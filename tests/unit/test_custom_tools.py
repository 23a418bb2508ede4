"""Custom tools (raw input, no JSON): each family that carries them writes the call in its own
syntax, the constraint holds the input to its text, regex or Lark format (real xgrammar), the
extractor reads the input back exactly however the output is chunked, and a family without a
place for raw input refuses them (400 naming the tool)."""

from __future__ import annotations

import json
import re

import pytest
import xgrammar as xgr
from hypothesis import given, settings
from hypothesis import strategies as st

from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import Tool, ToolChoice, get_format
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.checks import check_request
from toolwire.request.errors import RequestError
from toolwire.request.limits import Limits

from .family_tokenizers import family_tokenizer
from .test_formats import TIME, WEATHER, WRITE

CARRIERS = ("hermes", "deepseek_v3", "qwen3_coder", "glm45", "glm47")
XML = ("qwen3_coder", "glm45", "glm47")
REFUSERS = ("llama3_json", "mistral", "pythonic")
TICKET = Tool("ticket", "A ticket id.", custom=True, grammar=("regex", r"[A-Z]{3}-[0-9]{2,4}"))
PATCH = Tool(
    "apply_patch",
    "A patch.",
    custom=True,
    grammar=("lark", 'start: "*** Begin\\n" line+ "*** End"\nline: /[+-][a-z ]*\\n/\n'),
)
NOTE = Tool("note", "Free text.", custom=True)
TOOLS = [WEATHER, TIME, TICKET, PATCH, NOTE]


def write(family: str, calls: list[tuple[str, str, bool]]) -> str:
    """Calls [(name, arguments JSON or raw input, custom?)] as the family writes them."""
    fmt = get_format(family)
    if family in XML:  # each call marked; the function calls as test_formats writes them
        return ("" if family == "glm47" else "\n").join(
            fmt.custom_call(n)[0] + a + fmt.custom_call(n)[1] if custom else WRITE[family]([(n, a)])
            for n, a, custom in calls
        )
    if family == "hermes":
        return "\n".join(
            fmt.custom_call(n)[0] + a + fmt.custom_call(n)[1]
            if custom
            else f'<tool_call>\n{{"name": "{n}", "arguments": {a}}}\n</tool_call>'
            for n, a, custom in calls
        )
    return (
        "<｜tool▁calls▁begin｜>"
        + "\n".join(
            fmt.custom_call(n)[0] + a + fmt.custom_call(n)[1]
            if custom
            else f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{a}\n```<｜tool▁call▁end｜>"
            for n, a, custom in calls
        )
        + "<｜tool▁calls▁end｜>"
    )


@pytest.fixture(scope="module", params=CARRIERS)
def family(request, tokenizer):
    tok = family_tokenizer(tokenizer, request.param)
    fmt = get_format(request.param, tok)
    return request.param, tok, fmt, ConstraintCompiler(tok, len(tok), [tokenizer.eos_token_id])


def _accepts(family, choice, text, tools=TOOLS):
    _, tok, fmt, compiler = family
    c = build_constraint(fmt, tools, choice, True, common.ResponseFormat())
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    return m.accept_string(text) and m.accept_token(tok.eos_token_id) and m.is_terminated()


PATCH_OK = "*** Begin\n+add this\n-drop that\n*** End"


@pytest.mark.parametrize(
    "name,input_,ok",
    [
        ("ticket", "ABC-123", True),
        ("ticket", "ABC-1", False),
        ("ticket", "abc-123", False),
        ("apply_patch", PATCH_OK, True),
        ("apply_patch", "*** Begin\nno sign\n*** End", False),
        ("note", "anything at all, {not JSON}", True),
    ],
)
def test_named_custom_tool_input_follows_its_format(family, name, input_, ok):
    text = write(family[0], [(name, input_, True)])
    assert _accepts(family, ToolChoice("named", name), text) is ok


def test_custom_and_function_calls_mix(family):
    text = write(
        family[0], [("ticket", "XYZ-42", True), ("get_time", "{}", False), ("note", "hi", True)]
    )
    assert _accepts(family, ToolChoice("required"), text)
    assert _accepts(family, ToolChoice("auto"), "Some text.")
    only = ToolChoice("required", allowed=("ticket",))  # allowed_tools reaches custom tools
    assert _accepts(family, only, write(family[0], [("ticket", "XYZ-42", True)]))
    assert not _accepts(family, only, write(family[0], [("note", "hi", True)]))


def _outputs(family: str) -> list[str]:
    return [
        write(family, [("ticket", "ABC-123", True)]),
        write(family, [("apply_patch", PATCH_OK, True), ("get_time", "{}", False)]),
        write(
            family, [("get_weather", '{"city": "Rome", "unit": "c"}', False), ("note", "", True)]
        ),
        "Before. " + write(family, [("note", "x </custom> <｜tool▁call▁begin｜> y", True)])
        if family == "hermes"
        else write(family, [("note", "x </function> <tool_call> <arg_key> y", True)])
        if family in XML
        else write(family, [("note", "x </tool_call> y", True)]),
    ]


def _calls(fmt, text, cuts):
    ex = fmt.extractor(TOOLS)
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    deltas = [ex.feed(p) for p in pieces] + [ex.finish()]
    calls: dict[int, list] = {}
    for d in deltas:
        for c in d.calls:
            entry = calls.setdefault(c.index, [None, "", False])
            if c.name:
                entry[0], entry[2] = c.name, c.custom
            entry[1] += c.arguments
    return "".join(d.content for d in deltas), [tuple(calls[i]) for i in sorted(calls)]


@pytest.mark.parametrize("name", CARRIERS)
def test_extractor_reads_the_input_back_exactly(name):
    fmt = get_format(name)
    assert _calls(
        fmt, write(name, [("apply_patch", PATCH_OK, True), ("get_time", "{}", False)]), []
    ) == (
        "",
        [("apply_patch", PATCH_OK, True), ("get_time", "{}", False)],
    )
    content, calls = _calls(fmt, _outputs(name)[3], [])
    assert calls[0][1].startswith("x ") and calls[0][2]


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(CARRIERS), data=st.data())
def test_any_chunking_gives_the_same_result(name, data):
    fmt = get_format(name)
    text = data.draw(st.sampled_from(_outputs(name)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=len(text)))))
    assert _calls(fmt, text, cuts) == _calls(fmt, text, [])


@pytest.mark.parametrize("name", CARRIERS)
def test_past_custom_calls_render_and_read_back(name, tokenizer):
    """On the embedded model's template: a past custom call and its result render (hermes tells
    them in words; deepseek writes the call, which the extractor reads back)."""
    fmt = get_format(name, tokenizer)
    messages = [
        {"role": "user", "content": "File a ticket."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "custom", "custom": {"name": "ticket", "input": "ABC-12"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "filed"},
    ]
    rendered = fmt.render(tokenizer, messages, TOOLS)
    assert "ABC-12" in rendered and "filed" in rendered
    if name != "hermes":
        written = rendered.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
        assert _calls(fmt, written, [])[1] == [("ticket", "ABC-12", True)]


@pytest.mark.parametrize("name", REFUSERS)
def test_families_without_a_raw_payload_refuse(name, tokenizer):
    fmt = get_format(name, family_tokenizer(tokenizer, name))
    with pytest.raises(RequestError) as e:
        build_constraint(fmt, TOOLS, ToolChoice("auto"), True, common.ResponseFormat())
    assert e.value.param == "tools[2]" and e.value.code == "unsupported_parameter"


def _request(fmt: dict, choice: str | None = None) -> chat_pb2.ChatCompletionRequest:
    req = chat_pb2.ChatCompletionRequest(
        model="m", messages=[common.ChatMessage(role="user", content="hi")]
    )
    t = req.tools.add(type="custom", name="ticket")
    t.custom_format.type = fmt.get("type", "")
    t.custom_format.syntax = fmt.get("syntax", "")
    t.custom_format.definition = fmt.get("definition", "")
    if choice:
        req.tool_choice.custom_name = choice
    return req


@pytest.mark.parametrize(
    "fmt,choice,param",
    [
        (
            {"type": "grammar", "syntax": "regex", "definition": "[a-z"},
            None,
            "tools[0].custom.format.grammar.definition",
        ),
        (
            {"type": "grammar", "syntax": "lark", "definition": "start: undefined_rule"},
            None,
            "tools[0].custom.format.grammar.definition",
        ),
        (
            {"type": "grammar", "syntax": "pcre", "definition": "a"},
            None,
            "tools[0].custom.format.grammar.syntax",
        ),
        ({"type": "json"}, None, "tools[0].custom.format.type"),
        ({"type": "text"}, "nope", "tool_choice"),
        (
            {"type": "grammar", "syntax": "regex", "definition": "a" * 70000},
            None,
            "tools[0].custom.format.grammar.definition",
        ),
    ],
)
def test_bad_custom_tools_name_the_parameter(fmt, choice, param):
    with pytest.raises(RequestError) as e:
        check_request(_request(fmt, choice), Limits())
    assert e.value.param == param and e.value.status == 400


def test_good_custom_tool_passes():
    check_request(
        _request({"type": "grammar", "syntax": "regex", "definition": "[a-z]+"}, "ticket"),
        Limits(),
    )


def test_lark_definition_round_trips_to_json():
    assert json.loads(json.dumps(PATCH.openai_dict()))["custom"]["format"]["grammar"]["syntax"] == (
        "lark"
    )
    assert re.fullmatch(TICKET.grammar[1], "ABC-123")
