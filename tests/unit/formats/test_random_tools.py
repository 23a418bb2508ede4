"""Hypothesis on the template and the extractor with random tool schemas and conversations, in
every format: rendering fails only with a RequestError (a 400), the constraint of any
well-formed schema compiles (no false 400s), and calls written the way each family writes them
come back out of the extractor with the same names and arguments, however they are chunked."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.errors import RequestError
from toolwire.formats import Tool, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.template.v1 import template_pb2
from toolwire.services.template.server import TemplateServicer

from .family_tokenizers import FAMILIES, family_tokenizer
from .test_formats import WRITE, _run

NAMES = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
SCALARS = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer"},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {},
    ]
)
ENUMS = st.lists(
    st.text(max_size=6) | st.integers(-99, 99), min_size=1, max_size=4, unique=True
).map(lambda values: {"enum": values})


def _object(children):
    return st.dictionaries(NAMES, children, max_size=4).flatmap(
        lambda props: st.builds(
            lambda required, closed: {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": not closed,
            },
            st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]),
            st.booleans(),
        )
    )


SCHEMAS = st.recursive(
    SCALARS | ENUMS,
    lambda inner: st.one_of(
        inner.map(lambda items: {"type": "array", "items": items}),
        _object(inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options}),
    ),
    max_leaves=8,
)
PARAMETERS = _object(SCHEMAS)
# Text that looks like each family's markup, mixed with anything.
MARKUP = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "[TOOL_CALLS]",
        "[ARGS]",
        "<|python_tag|>",
        "[f(x=1)]",
        "<｜tool▁calls▁begin｜>",
        "<｜DSML｜invoke name=",
        "<|tool_calls_section_begin|>",
        "</think>",
        "{",
        '"}',
    ]
)
TEXT = st.lists(st.text(max_size=20) | MARKUP, max_size=4).map("".join)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False, width=32),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)

OBJECTS = st.dictionaries(st.text(max_size=8), JSON, max_size=3).map(json.dumps)


@st.composite
def requests(draw):
    tools = draw(
        st.lists(
            st.builds(lambda n, p, strict: (n, p, strict), NAMES, PARAMETERS, st.booleans()),
            max_size=3,
            unique_by=lambda t: t[0],
        )
    )
    messages = [common.ChatMessage(role="user", content=draw(TEXT))]
    for _ in range(draw(st.integers(0, 2))):
        calls = [
            common.ToolCall(
                id=f"call_{i}",
                type="function",
                function=common.FunctionCall(
                    name=draw(st.sampled_from([t[0] for t in tools]) if tools else NAMES),
                    arguments=draw(
                        st.one_of(OBJECTS, OBJECTS, OBJECTS, JSON.map(json.dumps), TEXT)
                    ),
                ),
            )
            for i in range(draw(st.integers(1, 2)))
        ]
        messages.append(common.ChatMessage(role="assistant", tool_calls=calls))
        messages += [
            common.ChatMessage(role="tool", tool_call_id=c.id, content=draw(TEXT)) for c in calls
        ]
        messages.append(common.ChatMessage(role="user", content=draw(TEXT)))
    mode = draw(st.sampled_from(["auto", "none", "required", "named"]))
    choice = common.ToolChoice()
    if mode == "named" and tools:
        choice.function_name = draw(st.sampled_from([t[0] for t in tools]))
    elif mode != "named":
        choice.mode = getattr(common.ToolChoice, f"MODE_{mode.upper()}")
    return template_pb2.RenderChatRequest(
        messages=messages,
        tool_choice=choice,
        parallel_tool_calls=draw(st.booleans()),
        tools=[
            common.FunctionTool(name=n, parameters_json=json.dumps(p), strict=s)
            for n, p, s in tools
        ],
    )


@pytest.fixture(scope="module")
def families(tokenizer):
    out = {}
    for name in FAMILIES:
        tok = family_tokenizer(tokenizer, name)
        out[name] = (
            TemplateServicer(tok, get_format(name, tok), "m", 8192, len(tok)),
            ConstraintCompiler(tok, len(tok), [tok.eos_token_id]),
            get_format(name, tok),
        )
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(family=st.sampled_from(list(FAMILIES)), request=requests())
def test_render_refuses_only_with_a_400_and_well_formed_schemas_compile(families, family, request):
    servicer, compiler, _ = families[family]
    try:
        response = servicer.render(request)
    except RequestError as e:
        assert e.status == 400 and e.param, e.message
        event(f"refused: {e.param.split('[')[0]}")
        return
    event("rendered")
    assert response.prompt_token_ids
    if response.HasField("constraint"):
        compiler.compile_constraint(response.constraint)  # raises if xgrammar refuses it


@st.composite
def written_calls(draw, family: str):
    """[(name, arguments JSON)] and the text the model writes for them."""
    if family == "pythonic":
        # kwargs are identifiers; values are written as Python literals, where a JSON escape
        # of a character outside the BMP (a surrogate pair) would mean two characters.
        keys, text = (
            NAMES,
            st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=10),
        )
    elif family in XML_FAMILIES:
        # Raw values typed by the schema (typed_tools): keys say their value's type; a name is
        # one of letters, digits and _.
        strings = st.dictionaries(NAMES.map("s_{}".format), st.text(max_size=10), max_size=2)
        numbers = st.dictionaries(NAMES.map("n_{}".format), st.integers(-999, 999), max_size=2)
        arguments = st.builds(lambda a, b: {**a, **b}, strings, numbers)
        calls = draw(st.lists(st.tuples(NAMES, arguments.map(json.dumps)), min_size=1, max_size=3))
        return calls, WRITE[family](calls)
    else:
        keys, text = st.text(max_size=8), st.text(max_size=10)
    arguments = st.dictionaries(keys, text | st.integers(-999, 999), max_size=3)
    calls = draw(st.lists(st.tuples(NAMES, arguments.map(json.dumps)), min_size=1, max_size=3))
    return calls, WRITE[family](calls)


# DSML writes keys in quotes: identifiers, as the XML-style families write them.
XML_FAMILIES = ("qwen3_coder", "glm45", "glm47", "deepseek_v32", "deepseek_v4")


def typed_tools(calls) -> list[Tool]:
    """Tools whose schemas type each key as written_calls does (s_: string, n_: integer)."""
    keys: dict[str, set] = {}
    for n, a in calls:
        keys.setdefault(n, set()).update(json.loads(a))
    return [
        Tool(
            n,
            parameters={
                "type": "object",
                "properties": {
                    k: {"type": "string" if k.startswith("s_") else "integer"} for k in sorted(ks)
                },
            },
        )
        for n, ks in keys.items()
    ]


@pytest.mark.parametrize("family", list(FAMILIES))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_written_calls_come_back_whole_however_chunked(families, family, data):
    fmt = families[family][2]
    calls, text = data.draw(written_calls(family))
    tools = [Tool(n, parameters={"type": "object"}) for n in {n for n, _ in calls}]
    if family in XML_FAMILIES:
        tools = typed_tools(calls)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=12))))
    _, got = _run(fmt, text, cuts, tools)
    assert [(n, json.loads(a)) for n, a in got] == [(n, json.loads(a)) for n, a in calls]
