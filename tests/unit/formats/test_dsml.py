"""DeepSeek V3.2 / V4 (DSML): each value's `string` attribute types it. The constraint (real
xgrammar, xgrammar's `deepseek_xml` reading of the schema) holds each value to its type and a
strict tool's parameters to the schema's set; the extractor reads raw strings (streamed as they
arrive) and JSON values back into the same arguments however the output is cut; with no chat
template the prompt is DeepSeek's encoding in chat mode (no reasoning)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint, tool_schemas
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.errors import RequestError
from toolwire.formats import Tool, ToolChoice, get_format
from toolwire.formats.reasoning import NONE, reasoning_mode
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .family_tokenizers import family_tokenizer
from .test_formats import CONVERSATION, WEATHER, WRITE, _run
from .test_xml_formats import ARGS, TYPED

DSML = ("deepseek_v32", "deepseek_v4")


@pytest.fixture(scope="module", params=DSML)
def family(request, tokenizer):
    tok = family_tokenizer(tokenizer, request.param)
    fmt = get_format(request.param, tok)
    return request.param, tok, fmt, ConstraintCompiler(tok, len(tok), [tokenizer.eos_token_id])


def _accepts(family, text, tools=(TYPED,), mode="required"):
    _, tok, fmt, compiler = family
    c = build_constraint(fmt, list(tools), ToolChoice(mode), True, common.ResponseFormat())
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    return m.accept_string(text) and m.accept_token(tok.eos_token_id) and m.is_terminated()


def _write(name, args, tool="book"):
    return WRITE[name]([(tool, json.dumps(args))])


def test_typed_values_come_back_as_their_json(family):
    name, _, fmt, _ = family
    text = _write(name, ARGS)
    assert '<｜DSML｜parameter name="seats" string="false">4</｜DSML｜parameter>' in text
    assert _accepts(family, text)
    content, calls = _run(fmt, text, [], [TYPED])
    assert content == "" and json.loads(calls[0][1]) == ARGS
    assert '"seats": 4, "budget": -12.5, "outside": false' in calls[0][1]


@pytest.mark.parametrize(
    "key,raw,string",
    [
        ("seats", "four", "false"),
        ("seats", "4", "true"),  # an integer written as a string
        ("budget", "cheap", "false"),
        ("outside", "False", "false"),
        ("when", '{"day": "Mon"}', "false"),
        ("tags", '["a", 1]', "false"),
        ("room", "kitchen", "true"),
        ("name", "Ada", "false"),  # a string written as JSON
    ],
)
def test_each_value_is_held_to_its_type_and_attribute(family, key, raw, string):
    name = family[0]
    text = _write(name, {**ARGS, key: "\x00"})
    text = text.replace(f'name="{key}" string="true">\x00', f'name="{key}" string="{string}">{raw}')
    assert raw in text
    assert not _accepts(family, text)


def test_strict_parameters_are_exact(family):
    name = family[0]
    assert not _accepts(family, _write(name, {k: v for k, v in ARGS.items() if k != "seats"}))
    assert not _accepts(family, _write(name, {**ARGS, "extra": "x"}))
    assert _accepts(family, _write(name, {k: v for k, v in ARGS.items() if k != "tags"}))


def test_what_dsml_cannot_write_is_refused_and_raw_strings_are_exact(family):
    fmt = family[2]
    quoted = Tool("t", parameters={"type": "object", "properties": {'a"b': {}}}, strict=True)
    with pytest.raises(RequestError) as e:
        tool_schemas(fmt, [quoted])
    assert e.value.param == "tools[0].function.parameters" and fmt.name in e.value.message
    # A raw string is written between the tags as it is: a pattern or a length holds exactly.
    exact = {"type": "string", "pattern": "^ a", "minLength": 2}
    tool_schemas(fmt, [Tool("t", parameters={"type": "object", "properties": {"v": exact}})])


def test_a_plain_string_streams_before_its_close(family):
    name, _, fmt, _ = family
    text = _write(name, {**ARGS, "name": "a long name that streams"})
    first = fmt.extractor([TYPED]).feed(text[: text.index("that streams")])
    assert "".join(c.arguments for c in first.calls).endswith('"name": "a long name ')


def _outputs(name):
    write = WRITE[name]
    return [
        "Before. " + _write(name, ARGS),
        write([("book", json.dumps({**ARGS, "name": "\n\nedge\n"})), ("book", json.dumps(ARGS))]),
        _write(name, {**ARGS, "name": '</｜DSML｜invoke> <｜DSML｜invoke name="x">'}),
        'No call <｜DSML｜invoke name="book"> here.',
        _write(name, ARGS)[:-40],  # cut by max tokens
    ]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(DSML), data=st.data())
def test_any_chunking_gives_the_same_result(name, data):
    fmt = get_format(name)
    text = data.draw(st.sampled_from(_outputs(name)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=len(text)))))
    assert _run(fmt, text, cuts, [TYPED]) == _run(fmt, text, [], [TYPED])


@pytest.mark.parametrize("name", DSML)
def test_one_character_at_a_time(name):
    fmt = get_format(name)
    for text in _outputs(name):
        assert _run(fmt, text, list(range(1, len(text))), [TYPED]) == _run(fmt, text, [], [TYPED])
    calls = _run(fmt, _outputs(name)[1], [], [TYPED])[1]
    assert json.loads(calls[0][1])["name"] == "\n\nedge\n"  # raw: no layout to trim
    tricky = _run(fmt, _outputs(name)[2], [], [TYPED])[1]
    assert json.loads(tricky[0][1])["name"].startswith("</｜DSML｜invoke>")
    assert _run(fmt, _outputs(name)[3], [], [TYPED]) == (_outputs(name)[3], [])


def test_without_a_template_the_prompt_is_the_encoding_in_chat_mode(family):
    name, tok, fmt, _ = family
    prompt = fmt.render(tok, CONVERSATION, [WEATHER])
    assert prompt.startswith("<｜begin▁of▁sentence｜>Be brief.\n\n## Tools")
    assert prompt.endswith("</think>") and reasoning_mode(tok, prompt) == NONE
    results = (
        "<｜User｜><tool_result>14C</tool_result>\n\n<tool_result>18C</tool_result>"
        "<｜Assistant｜></think>"
        if name == "deepseek_v4"
        else "\n\n<function_results>\n<result>14C</result>\n<result>18C</result>\n"
        "</function_results>\n\n</think>"
    )
    assert prompt.endswith("<｜end▁of▁sentence｜>" + results)
    # The past calls in it read back as the calls they were.
    written = prompt.split("<｜Assistant｜></think>")[1].split("<｜end▁of▁sentence｜>")[0]
    delta = fmt.extractor([WEATHER]).parse_complete(written)
    assert [json.loads(c.arguments) for c in delta.calls] == [
        {"city": "Paris", "unit": "c"},
        {"city": "Rome", "unit": "c"},
    ]
