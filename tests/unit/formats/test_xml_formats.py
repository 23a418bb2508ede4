"""The XML-style families (qwen3_coder, glm45, glm47): raw parameter values typed by the tool's
schema. The constraint (real xgrammar) holds each value to its type and a strict tool's
parameters to the schema's set; the extractor turns each value into the JSON the schema types
it as, streams plain strings as they arrive, and gives the same arguments however the output is
cut; what the layout cannot write exactly is refused (400), never loosened."""

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
from toolwire.formats.reasoning import STARTED, ReasoningExtractor, reasoning_mode
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .family_tokenizers import family_tokenizer, thinking_tokenizer
from .test_formats import WRITE, _run

XML = ("qwen3_coder", "glm45", "glm47")
TYPED = Tool(
    "book",
    "Book a table.",
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "seats": {"type": "integer"},
            "budget": {"type": "number"},
            "outside": {"type": "boolean"},
            "note": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}]},
            "when": {"$ref": "#/$defs/When"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "room": {"enum": ["main", "terrace", 7]},
            "nothing": {"type": "null"},
        },
        "required": ["name", "seats", "budget", "outside", "when"],
        "additionalProperties": False,
        "$defs": {
            "When": {
                "type": "object",
                "properties": {"day": {"type": "string"}, "hour": {"type": "integer"}},
                "required": ["day", "hour"],
                "additionalProperties": False,
            }
        },
    },
    strict=True,
)
ARGS = {
    "name": 'Ada <b> & "co"\n2nd line',
    "seats": 4,
    "budget": -12.5,
    "outside": False,
    "note": None,
    "when": {"day": "Mon", "hour": 19},
    "tags": ["quiet", "vegan"],
    "room": 7,
    "nothing": None,
}


@pytest.fixture(scope="module", params=XML)
def family(request, tokenizer):
    tok = family_tokenizer(tokenizer, request.param)
    fmt = get_format(request.param, tok)
    return request.param, tok, fmt, ConstraintCompiler(tok, len(tok), [tokenizer.eos_token_id])


def _accepts(family, text, tools=(TYPED,), mode="required", name=None):
    _, tok, fmt, compiler = family
    c = build_constraint(fmt, list(tools), ToolChoice(mode, name), True, common.ResponseFormat())
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    return m.accept_string(text) and m.accept_token(tok.eos_token_id) and m.is_terminated()


def _write(family_name, args, name="book"):
    return WRITE[family_name]([(name, json.dumps(args))])


def test_typed_values_come_back_as_their_json(family):
    name, _, fmt, _ = family
    text = _write(name, ARGS)
    assert _accepts(family, text)
    content, calls = _run(fmt, text, [], [TYPED])
    assert content == "" and calls[0][0] == "book"
    assert json.loads(calls[0][1]) == ARGS
    # The arguments are JSON in json.dumps's layout, typed: 4 not "4", false not "False".
    assert '"seats": 4, "budget": -12.5, "outside": false' in calls[0][1]


@pytest.mark.parametrize(
    "key,raw",
    [
        ("seats", "four"),  # integer
        ("seats", "4.5"),
        ("budget", "cheap"),  # number
        ("outside", "False"),  # boolean: JSON's false, not Python's
        ("when", '{"day": "Mon"}'),  # object: its required keys
        ("tags", '["a", 1]'),  # array items
        ("room", "kitchen"),  # enum
        ("nothing", "nil"),
    ],
)
def test_each_value_is_held_to_its_type(family, key, raw):
    name = family[0]
    text = _write(name, {**ARGS, key: "\x00"}).replace("\x00", raw)
    assert not _accepts(family, text)


def test_strict_parameters_are_exact(family):
    name = family[0]
    missing = {k: v for k, v in ARGS.items() if k != "seats"}
    assert not _accepts(family, _write(name, missing))
    assert not _accepts(family, _write(name, {**ARGS, "extra": "x"}))
    optional_left_out = {k: v for k, v in ARGS.items() if k not in ("tags", "room", "note")}
    assert _accepts(family, _write(name, optional_left_out))


def test_non_strict_open_schema_takes_any_identifier_key(family):
    name = family[0]
    loose = Tool("loose", parameters={"type": "object"})
    text = _write(name, {"a": "x", "b": [1, 2]}, "loose")
    assert _accepts(family, text, (loose,))
    _, calls = _run(family[2], text, [], [loose])
    assert json.loads(calls[0][1]) == {"a": "x", "b": [1, 2]}


@pytest.mark.parametrize(
    "schema,why",
    [
        ({"type": "string", "pattern": "^a"}, "pattern"),
        ({"type": "string", "minLength": 2}, "minLength"),
        ({"enum": [" padded", "x"]}, "whitespace"),
    ],
)
def test_what_the_layout_cannot_read_back_exactly_is_refused_in_strict(family, schema, why):
    fmt = family[2]
    tool = Tool(
        "t",
        parameters={
            "type": "object",
            "properties": {"v": schema},
            "required": ["v"],
            "additionalProperties": False,
        },
        strict=True,
    )
    with pytest.raises(RequestError) as e:
        tool_schemas(fmt, [tool])
    assert e.value.status == 400 and e.value.param == "tools[0].function.parameters"
    assert why in e.value.message and fmt.name in e.value.message
    odd_name = Tool("t", parameters={"type": "object", "properties": {"a<b>": {}}}, strict=True)
    with pytest.raises(RequestError):
        tool_schemas(fmt, [odd_name])
    tool_schemas(fmt, [Tool(tool.name, parameters=tool.parameters)])  # not strict: compiled


def test_a_plain_string_streams_before_its_close(family):
    name, _, fmt, _ = family
    text = _write(name, {**ARGS, "name": "a long name that streams"})
    cut = text.index("that streams")
    ex = fmt.extractor([TYPED])
    first = ex.feed(text[:cut])
    streamed = "".join(c.arguments for c in first.calls)
    assert streamed.endswith('"name": "a long name ')


def _outputs(name):
    write = WRITE[name]
    return [
        "Before. " + _write(name, ARGS),
        write([("book", json.dumps({**ARGS, "name": "\n\nedge\n"})), ("book", json.dumps(ARGS))]),
        _write(name, {**ARGS, "name": "</tool_call> <tool_call>x"}),
        "No call <tool_call> here.",
        _write(name, ARGS)[:-25],  # cut by max tokens
    ]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(XML), data=st.data())
def test_typed_values_any_chunking_gives_the_same_result(name, data):
    fmt = get_format(name)
    text = data.draw(st.sampled_from(_outputs(name)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=len(text)))))
    assert _run(fmt, text, cuts, [TYPED]) == _run(fmt, text, [], [TYPED])


@pytest.mark.parametrize("name", XML)
def test_typed_values_one_character_at_a_time(name):
    fmt = get_format(name)
    for text in _outputs(name):
        whole = _run(fmt, text, [], [TYPED])
        assert _run(fmt, text, list(range(1, len(text))), [TYPED]) == whole
    content, calls = _run(fmt, _outputs(name)[1], [], [TYPED])
    # qwen's layout newlines around a string (the writer's) go; the string's own stay.
    assert json.loads(calls[0][1])["name"] == "\n\nedge\n"
    assert _run(fmt, _outputs(name)[3], [], [TYPED]) == ("No call <tool_call> here.", [])


@pytest.mark.parametrize("name", ["qwen3_coder", "glm47"])
def test_thinking_first_then_a_typed_call(name, tokenizer):
    tok = (
        thinking_tokenizer(tokenizer, name)
        if name == "qwen3_coder"
        else family_tokenizer(tokenizer, name)
    )
    fmt = get_format(name, tok)
    prompt = fmt.render(tok, [{"role": "user", "content": "hi"}], [TYPED])
    mode = reasoning_mode(tok, prompt)
    assert mode == STARTED
    compiler = ConstraintCompiler(tok, len(tok), [tokenizer.eos_token_id])
    c = build_constraint(fmt, [TYPED], ToolChoice("required"), True, common.ResponseFormat(), mode)
    call = _write(name, ARGS)
    text = f"I could write <tool_call> here.</think>{call}"  # as test_reasoning.py writes it
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    assert m.accept_string(text) and m.accept_token(tok.eos_token_id)
    delta = ReasoningExtractor(fmt.extractor([TYPED]), mode).parse_complete(text)
    assert delta.reasoning == "I could write <tool_call> here."
    assert json.loads("".join(c.arguments for c in delta.calls)) == ARGS


def test_a_strict_name_with_a_hyphen_is_written_and_read(family):
    name, _, fmt, _ = family
    tool = Tool(
        "lookup",
        parameters={
            "type": "object",
            "properties": {"user-id": {"type": "integer"}},
            "required": ["user-id"],
            "additionalProperties": False,
        },
        strict=True,
    )
    text = _write(name, {"user-id": 42}, "lookup")
    assert _accepts(family, text, (tool,))
    assert not _accepts(family, _write(name, {"user_id": 42}, "lookup"), (tool,))
    assert json.loads(_run(fmt, text, [], [tool])[1][0][1]) == {"user-id": 42}
