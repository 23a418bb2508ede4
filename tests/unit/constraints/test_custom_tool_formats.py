"""Custom tools (raw input, no JSON): each family that carries them writes the call in its own
syntax, the constraint holds the input to its text, regex or Lark format (real xgrammar), the
extractor reads the input back exactly however the output is chunked, and a family without a
place for raw input refuses them (400 naming the tool)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.formats.family_tokenizers import family_tokenizer
from tests.unit.formats.test_formats import TIME, WEATHER, WRITE
from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.errors import RequestError
from toolwire.formats import Tool, ToolChoice, get_format
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.checks import check_chat_request
from toolwire.request.limits import Limits

XML = ("qwen3_coder", "glm45", "glm47")
DSML = ("deepseek_v32", "deepseek_v4")
# Their raw input stands where a call's JSON goes: test_formats writes both alike.
IN_PLACE = ("deepseek_v31", "kimi_k2")
CARRIERS = ("hermes", "deepseek_v3", "mistral", "pythonic", "harmony", *XML, *DSML, *IN_PLACE)
# Non-ASCII markers: refused in the EBNF dialect (constraints/ebnf.py), a 400.
NON_ASCII = ("deepseek_v3", "deepseek_v31", *DSML)
REFUSERS = ("llama3_json",)
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
    if family == "harmony":
        return "<|start|>assistant".join(
            fmt.custom_call(n)[0] + a + fmt.custom_call(n)[1]
            if custom
            else f"<|channel|>commentary to=functions.{n} <|constrain|>json<|message|>{a}<|call|>"
            for n, a, custom in calls
        )
    if family == "mistral":
        return "".join(
            fmt.custom_call(n)[0] + a if custom else f"[TOOL_CALLS]{n}[ARGS]{a}"
            for n, a, custom in calls
        )
    if family == "pythonic":
        return (
            "["
            + ", ".join(
                fmt.custom_call(n)[0] + a + fmt.custom_call(n)[1] if custom else f"{n}()"
                for n, a, custom in calls  # (the function calls written here take no arguments)
            )
            + "]"
        )
    if family in XML:  # each call marked; the function calls as test_formats writes them
        return ("" if family == "glm47" else "\n").join(
            fmt.custom_call(n)[0] + a + fmt.custom_call(n)[1] if custom else WRITE[family]([(n, a)])
            for n, a, custom in calls
        )
    if family in IN_PLACE:
        return WRITE[family]([(n, a) for n, a, _ in calls])
    if family in DSML:
        block = WRITE[family]([])  # the empty block: its begin and end around the invokes
        begin, end = block.split("\n\n</", 1)[0] + "\n", "\n</" + block.split("\n\n</", 1)[1]
        return (
            begin
            + "\n".join(
                fmt.custom_call(n)[0] + a + fmt.custom_call(n)[1].removesuffix("\n")
                if custom
                else WRITE[family]([(n, a)]).removeprefix(begin).removesuffix(end)
                for n, a, custom in calls
            )
            + end
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
    some_text = "Some text." if family[0] != "harmony" else "<|channel|>final<|message|>Some text."
    assert _accepts(family, ToolChoice("auto"), some_text)
    only = ToolChoice("required", allowed=("ticket",))  # allowed_tools reaches custom tools
    assert _accepts(family, only, write(family[0], [("ticket", "XYZ-42", True)]))
    assert not _accepts(family, only, write(family[0], [("note", "hi", True)]))


def _outputs(family: str) -> list[str]:
    return [
        write(family, [("ticket", "ABC-123", True)]),
        write(family, [("apply_patch", PATCH_OK, True), ("get_time", "{}", False)]),
        write(family, [("get_time", "{}", False), ("note", "", True)])
        if family == "pythonic"
        else write(
            family, [("get_weather", '{"city": "Rome", "unit": "c"}', False), ("note", "", True)]
        ),
        "Before. " + write(family, [("note", "x </custom> <｜tool▁call▁begin｜> y", True)])
        if family == "hermes"
        else write(family, [("note", "x </function> <tool_call> <arg_key> y", True)])
        if family in XML
        else write(family, [("note", 'x </｜DSML｜invoke> <｜DSML｜parameter name="y', True)])
        if family in DSML
        else write(family, [("note", "x </tool_call> y", True)]),
        write(family, [("note", 'a "" ) "quoted" ] \\ [ARGS] {"z": 1}', True)]),
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
    them in words; the others write the call, which the extractor reads back)."""
    fmt = get_format(name, None if name == "mistral" else tokenizer)  # mistral: with [ARGS]
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
    if name == "harmony":  # written whole, not in the model's template
        written = rendered.split("<|start|>user<|message|>File a ticket.<|end|>")[1]
        written = written.removeprefix("<|start|>assistant").split("<|start|>functions")[0]
        assert _calls(fmt, written, [])[1] == [("ticket", "ABC-12", True)]
    elif name != "hermes":
        written = rendered.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
        assert _calls(fmt, written, [])[1] == [("ticket", "ABC-12", True)]


@pytest.mark.parametrize("name", REFUSERS)
def test_families_without_a_raw_payload_refuse(name, tokenizer):
    fmt = get_format(name, family_tokenizer(tokenizer, name))
    with pytest.raises(RequestError) as e:
        build_constraint(fmt, TOOLS, ToolChoice("auto"), True, common.ResponseFormat())
    assert e.value.param == "tools[2]" and e.value.code == "unsupported_parameter"


def test_mistral_without_args_token_refuses(tokenizer):
    """The older list form has no raw slot (mistral.py says why)."""
    with pytest.raises(RequestError) as e:
        build_constraint(
            get_format("mistral", tokenizer),
            TOOLS,
            ToolChoice("auto"),
            True,
            common.ResponseFormat(),
        )
    assert e.value.param == "tools[2]"


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
        check_chat_request(_request(fmt, choice), Limits())
    assert e.value.param == param and e.value.status == 400


def test_good_custom_tool_passes():
    check_chat_request(
        _request({"type": "grammar", "syntax": "regex", "definition": "[a-z]+"}, "ticket"),
        Limits(),
    )


def test_lark_definition_round_trips_to_json():
    assert json.loads(json.dumps(PATCH.openai_dict()))["custom"]["format"]["grammar"]["syntax"] == (
        "lark"
    )
    assert re.fullmatch(TICKET.grammar[1], "ABC-123")


@pytest.mark.parametrize("name", CARRIERS)
def test_the_ebnf_dialect_means_the_same(name):
    """TensorRT-LLM's dialect (one EBNF grammar, constraints/ebnf.py) states each carrier's
    custom calls alike: the same outputs accepted and refused as by the structural tag."""
    from toolwire.constraints.compiler import grammar_of, in_dialect
    from toolwire.constraints.dialects import EBNF, DialectError
    from toolwire.constraints.kinds import Constraint

    fmt = get_format(name)
    texts = _outputs(name) + [
        write(name, [("ticket", "ABC-1", True)]),
        write(name, [("apply_patch", "*** Begin\nno sign\n*** End", True)]),
    ]
    for choice in (ToolChoice("auto"), ToolChoice("required"), ToolChoice("named", "ticket")):
        native = Constraint.from_proto(
            build_constraint(fmt, TOOLS, choice, True, common.ResponseFormat())
        )
        try:
            ebnf = in_dialect(native, EBNF)
        except DialectError:  # deepseek: its markers are non-ASCII (ebnf.py), refused: a 400
            assert name in NON_ASCII
            continue
        for text in texts:
            assert xgr.accepts_whole(grammar_of(native), text) == (
                xgr.accepts_whole(grammar_of(ebnf), text)
            ), (choice, text)


def test_a_call_that_ends_the_output_counts():
    """Mistral's calls have no close: the output's end ends the last one (finish_reason
    tool_calls), a JSON call's as a custom call's."""
    for text in ("[TOOL_CALLS]get_time[ARGS]{}", "[TOOL_CALLS]note[ARGS]hi"):
        ex = get_format("mistral").extractor(TOOLS)
        ex.parse_complete(text)
        assert ex.call_count == 1
