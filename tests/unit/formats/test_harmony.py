"""gpt-oss's Harmony format beyond what every family shares (test_formats.py): the channels
(analysis is reasoning, final the answer), the turn's shape in each tool_choice mode with the
analysis message first, response_format in the final channel, the TypeScript declarations, and
the extractor's channels however the output is chunked."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import Tool, ToolChoice, detect_format, get_format
from toolwire.formats.harmony import tool_declaration
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .family_tokenizers import family_tokenizer
from .test_formats import TOOLS, WRITE, T, W

NEXT = "<|start|>assistant"
THINK = "<|channel|>analysis<|message|>Let me think.<|end|>" + NEXT
FINAL = "<|channel|>final<|message|>It is sunny."
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def harmony(tokenizer):
    tok = family_tokenizer(tokenizer, "harmony")
    return tok, get_format("harmony", tok), ConstraintCompiler(tok, len(tok), [tok.eos_token_id])


def _accepts(harmony, choice, text, parallel=True, rf=None):
    tok, fmt, compiler = harmony
    c = build_constraint(fmt, TOOLS, choice, parallel, rf or common.ResponseFormat())
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    return m.accept_string(text) and m.accept_token(tok.eos_token_id) and m.is_terminated()


def test_detected_by_its_channel_token(harmony):
    assert detect_format(harmony[0]) == "harmony"


@pytest.mark.parametrize(
    "mode,text,ok",
    [
        ("auto", FINAL, True),
        ("auto", THINK + FINAL, True),
        ("auto", THINK + WRITE["harmony"]([W]), True),
        ("auto", THINK + THINK + FINAL, False),  # one analysis message
        ("auto", WRITE["harmony"]([W]) + NEXT + FINAL, False),  # no answer after calls
        ("auto", "It is sunny.", False),  # unframed text
        ("auto", "<|channel|>final<|message|>a <|start|> b", False),  # framing in free text
        ("none", THINK + FINAL, True),
        ("none", THINK + WRITE["harmony"]([T]), False),
        ("required", THINK + WRITE["harmony"]([T]), True),
        ("required", THINK + FINAL, False),
        ("required", THINK, False),
        (
            "required",
            "<|channel|>analysis<|message|>x<|call|>" + NEXT + WRITE["harmony"]([T]),
            False,
        ),
    ],
)
def test_the_turn_in_each_mode(harmony, mode, text, ok):
    assert _accepts(harmony, ToolChoice(mode), text) is ok


def test_named_parallel_and_allowed(harmony):
    two = THINK + WRITE["harmony"]([T, T])
    assert _accepts(harmony, ToolChoice("named", "get_time"), two)
    assert not _accepts(harmony, ToolChoice("named", "get_time"), two, parallel=False)
    assert not _accepts(harmony, ToolChoice("named", "get_time"), WRITE["harmony"]([W]))
    only_time = ToolChoice("required", allowed=("get_time",))
    assert _accepts(harmony, only_time, WRITE["harmony"]([T]))
    assert not _accepts(harmony, only_time, WRITE["harmony"]([W]))


def test_response_format_is_the_final_channel(harmony):
    rf = common.ResponseFormat(
        type="json_schema", strict=True, schema_json=json.dumps(ANSWER_SCHEMA)
    )
    good = THINK + '<|channel|>final<|message|>{"answer": "sunny"}'
    for choice in (ToolChoice("auto"), ToolChoice("none")):
        assert _accepts(harmony, choice, good, rf=rf)
        assert not _accepts(harmony, choice, THINK + FINAL, rf=rf)
        assert not _accepts(harmony, choice, '{"answer": "sunny"}', rf=rf)
    assert _accepts(harmony, ToolChoice("auto"), WRITE["harmony"]([T]), rf=rf)
    tok, fmt, compiler = harmony
    alone = build_constraint(fmt, [], ToolChoice("auto"), True, rf)  # no tools at all
    m = xgr.GrammarMatcher(compiler.compile_constraint(alone))
    assert m.accept_string(good) and m.accept_token(tok.eos_token_id)


def test_typescript_declarations():
    tool = Tool(
        "find",
        "Find things.\nFast.",
        {
            "type": "object",
            "properties": {
                "q": {"type": "string", "description": "The query."},
                "n": {"type": "integer"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}},
                "at": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "opts": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
            },
            "required": ["q"],
        },
    )
    assert tool_declaration(tool) == (
        "// Find things.\n// Fast.\ntype find = (_: {\n// The query.\nq: string,\nn?: number,\n"
        'tags?: Array<"a" | "b">,\nat?: string | null,\nopts?: {\ndeep?: boolean,\n},\n'
        "}) => any;"
    )
    assert tool_declaration(Tool("now")) == "type now = () => any;"
    lark = Tool("patch", "", custom=True, grammar=("lark", "start: /a+/"))
    assert tool_declaration(lark) == (
        "// Its input is raw text (not JSON) in this lark grammar:\n// start: /a+/\n"
        "type patch = (FREEFORM) => any;"
    )


OUTPUTS = [
    THINK + FINAL + "<|return|>",
    THINK + WRITE["harmony"]([W, T]) + "<|call|>",
    "<|channel|>commentary<|message|>One moment.<|end|>" + NEXT + WRITE["harmony"]([W]),
    THINK + '<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>"x"<|call|>',
    THINK + "<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{}",
    "<|channel|>analysis<|message|>cut by max tok",
    "No frame at all.",
    WRITE["harmony"]([("get_time", '{"s": "<|end|> <|start|>assistant"}')]),
]


def _run(text, cuts):
    ex = get_format("harmony").extractor(TOOLS)
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    deltas = [ex.feed(p) for p in pieces] + [ex.finish()]
    calls: dict[int, list] = {}
    for d in deltas:
        for c in d.calls:
            entry = calls.setdefault(c.index, [None, ""])
            if c.name:
                assert entry[0] is None, "a call announced twice"
                entry[0] = c.name
            entry[1] += c.arguments
    return (
        "".join(d.content for d in deltas),
        "".join(d.reasoning for d in deltas),
        [tuple(calls[i]) for i in sorted(calls)],
        ex.call_count,
    )


def test_channels_go_where_they_belong():
    assert _run(OUTPUTS[0], []) == ("It is sunny.", "Let me think.", [], 0)
    content, reasoning, calls, count = _run(OUTPUTS[1], [])
    assert (content, reasoning, count) == ("", "Let me think.", 2)
    assert calls == [("get_weather", '{"city": "Paris", "unit": "c"}'), ("get_time", "{}")]
    assert _run(OUTPUTS[2], [])[0] == "One moment."  # a preamble is content
    not_json = OUTPUTS[3][len(THINK) - len(NEXT) :]
    assert _run(OUTPUTS[3], []) == (not_json, "Let me think.", [], 0)  # given back whole
    assert _run(OUTPUTS[4], [])[2:] == ([("get_time", "{}")], 1)  # <|call|> a stop token
    assert _run(OUTPUTS[5], []) == ("", "cut by max tok", [], 0)
    assert _run(OUTPUTS[6], []) == ("No frame at all.", "", [], 0)
    assert json.loads(_run(OUTPUTS[7], [])[2][0][1]) == {"s": "<|end|> <|start|>assistant"}


@settings(max_examples=200, deadline=None)
@given(text=st.sampled_from(OUTPUTS), data=st.data())
def test_any_chunking_gives_the_same_result(text, data):
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=len(text)))))
    assert _run(text, cuts) == _run(text, [])


def test_the_extractor_service_reads_channels_without_tools(tokenizer):
    """Harmony frames every message: with no tools (and with tool_choice none) the extractor
    service still splits analysis from the answer, and a finished call ends in tool_calls."""
    import asyncio

    from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
    from toolwire.services.extractor.server import ExtractorServicer

    tok = family_tokenizer(tokenizer, "harmony")

    class Context:
        def invocation_metadata(self):
            return ()

    def extract(text: str, tools: list[common.FunctionTool]) -> tuple[str, str, str, int]:
        async def messages():
            yield pb.ExtractRequest(setup=pb.ExtractSetup(tool_format="harmony", tools=tools))
            yield pb.ExtractRequest(
                tokens=pb.TokenChunk(token_ids=tok.encode(text, add_special_tokens=False))
            )
            yield pb.ExtractRequest(end=pb.ExtractEnd(finish_reason="stop"))

        async def run():
            return [
                r async for r in ExtractorServicer(tok, "harmony").Extract(messages(), Context())
            ]

        out = asyncio.run(run())
        return (
            "".join(r.content for r in out),
            "".join(r.reasoning_content for r in out),
            out[-1].finish_reason,
            sum(1 for r in out for c in r.tool_calls if c.name),
        )

    assert extract(THINK + FINAL, []) == ("It is sunny.", "Let me think.", "stop", 0)
    time = [common.FunctionTool(name="get_time")]
    assert extract(THINK + WRITE["harmony"]([T]), time) == ("", "Let me think.", "tool_calls", 1)
