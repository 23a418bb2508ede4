"""Every tool format on a tokenizer of its family: detection, golden prompts, the constraint
compiled by real xgrammar (valid calls pass, invalid ones are refused in each tool_choice mode),
and extraction that gives the same calls however the output is chunked."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import Tool, ToolChoice, detect_format, get_format
from toolwire.formats.hermes import narrated_calls
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .family_tokenizers import FAMILIES, family_tokenizer

GOLDEN = pathlib.Path(__file__).parent / "golden"
WEATHER = Tool(
    "get_weather",
    "Get the weather.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    strict=True,
)
TIME = Tool("get_time", "The time.")
TOOLS = [WEATHER, TIME]

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"c"}'},
            },
            {
                "id": "call_def",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome", "unit": "c"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc", "content": "14C"},
    {"role": "tool", "tool_call_id": "call_def", "content": "18C"},
]


# How each family writes a list of calls [(name, arguments JSON)].
def _hermes(calls):
    return "\n".join(
        f'<tool_call>\n{{"name": "{n}", "arguments": {a}}}\n</tool_call>' for n, a in calls
    )


def _llama(calls):
    return "; ".join(f'<|python_tag|>{{"name": "{n}", "parameters": {a}}}' for n, a in calls)


def _mistral(calls):
    return "".join(f"[TOOL_CALLS]{n}[ARGS]{a}" for n, a in calls)


def _pythonic(calls):
    def kwargs(a):
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in json.loads(a).items())

    return "[" + ", ".join(f"{n}({kwargs(a)})" for n, a in calls) + "]"


def _deepseek(calls):
    return (
        "<｜tool▁calls▁begin｜>"
        + "\n".join(
            f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{n}\n```json\n{a}\n```<｜tool▁call▁end｜>"
            for n, a in calls
        )
        + "<｜tool▁calls▁end｜>"
    )


def _harmony(calls):
    return "<|start|>assistant".join(
        f"<|channel|>commentary to=functions.{n} <|constrain|>json<|message|>{a}<|call|>"
        for n, a in calls
    )


def _raw(v):
    """An XML-style family's raw value: a string as it is, anything else as JSON."""
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _qwen3_coder(calls):
    return "\n".join(
        f"<tool_call>\n<function={n}>\n"
        + "".join(f"<parameter={k}>\n{_raw(v)}\n</parameter>\n" for k, v in json.loads(a).items())
        + "</function>\n</tool_call>"
        for n, a in calls
    )


def _glm(nl):
    def write(calls):
        return nl.join(
            f"<tool_call>{n}{nl}"
            + "".join(
                f"<arg_key>{k}</arg_key>{nl}<arg_value>{_raw(v)}</arg_value>{nl}"
                for k, v in json.loads(a).items()
            )
            + "</tool_call>"
            for n, a in calls
        )

    return write


def _deepseek_v31(calls):
    return (
        "<｜tool▁calls▁begin｜>"
        + "".join(f"<｜tool▁call▁begin｜>{n}<｜tool▁sep｜>{a}<｜tool▁call▁end｜>" for n, a in calls)
        + "<｜tool▁calls▁end｜>"
    )


def _dsml(block):
    def write(calls):
        invokes = "\n".join(
            f'<｜DSML｜invoke name="{n}">\n'
            + "".join(
                f'<｜DSML｜parameter name="{k}" string="{str(isinstance(v, str)).lower()}">'
                f"{_raw(v)}</｜DSML｜parameter>\n"
                for k, v in json.loads(a).items()
            )
            + "</｜DSML｜invoke>"
            for n, a in calls
        )
        return f"\n\n<｜DSML｜{block}>\n{invokes}\n</｜DSML｜{block}>"

    return write


def _kimi(calls):
    return (
        "<|tool_calls_section_begin|>"
        + "".join(
            f"<|tool_call_begin|>functions.{n}:{i}<|tool_call_argument_begin|>{a}<|tool_call_end|>"
            for i, (n, a) in enumerate(calls)
        )
        + "<|tool_calls_section_end|>"
    )


WRITE = {
    "hermes": _hermes,
    "llama3_json": _llama,
    "mistral": _mistral,
    "pythonic": _pythonic,
    "deepseek_v3": _deepseek,
    "harmony": _harmony,
    "qwen3_coder": _qwen3_coder,
    "glm45": _glm("\n"),
    "glm47": _glm(""),
    "deepseek_v31": _deepseek_v31,
    "deepseek_v32": _dsml("function_calls"),
    "deepseek_v4": _dsml("tool_calls"),
    "kimi_k2": _kimi,
}
# A text answer as each family writes it (Harmony frames it in its final channel).
ANSWER = {"harmony": "<|channel|>final<|message|>{}"}


def answer(name: str, text: str) -> str:
    return ANSWER.get(name, "{}").format(text)


W = ("get_weather", '{"city": "Paris", "unit": "c"}')
T = ("get_time", "{}")
BAD_ENUM = ("get_weather", '{"city": "Paris", "unit": "kelvin"}')
MISSING = ("get_weather", '{"city": "Paris"}')
UNKNOWN = ("rm_rf", "{}")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tokenizer):
    tok = family_tokenizer(tokenizer, request.param)
    fmt = get_format(request.param, tok)
    compiler = ConstraintCompiler(tok, len(tok), [tokenizer.eos_token_id])
    return request.param, tok, fmt, compiler


def test_detected_from_the_template(family):
    name, tok, _, _ = family
    assert detect_format(tok) == name


def test_golden_prompt(family):
    name, tok, fmt, _ = family
    rendered = fmt.render(tok, CONVERSATION, [WEATHER])
    assert rendered == (GOLDEN / f"{name}.txt").read_text()


def test_plain_rendering_round_trips_past_calls(family, tokenizer):
    """On a template without tools (the embedded model's), past calls render the way the
    format writes them, and the extractor reads them back as the same calls; hermes tells them
    in words (formats/hermes.py says why), which no extractor reads as a call."""
    name, _, _, _ = family
    fmt = get_format(name, tokenizer)
    rendered = fmt.render(tokenizer, CONVERSATION[:3], [WEATHER])
    if name == "harmony":  # Harmony is written whole, not in the model's template
        written = rendered.split("<|start|>user<|message|>Weather in Paris and Rome?<|end|>")[1]
        written = written.removeprefix("<|start|>assistant").removesuffix("<|start|>assistant")
    else:
        written = rendered.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    delta = fmt.extractor([WEATHER]).parse_complete(written)
    if fmt.plain_style().calls_text is narrated_calls:  # hermes tells finished rounds in words
        assert written == (
            'Let me call get_weather({"city": "Paris", "unit": "c"}). '
            'Let me call get_weather({"city": "Rome", "unit": "c"}).'
        )
        assert not delta.calls
        return
    assert [(c.name, json.loads(c.arguments)) for c in delta.calls] == [
        ("get_weather", {"city": "Paris", "unit": "c"}),
        ("get_weather", {"city": "Rome", "unit": "c"}),
    ]


def _accepts(family, mode, text, parallel=True, name=None):
    _, tok, fmt, compiler = family
    c = build_constraint(fmt, TOOLS, ToolChoice(mode, name), parallel, common.ResponseFormat())
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    return m.accept_string(text) and m.accept_token(tok.eos_token_id) and m.is_terminated()


@pytest.mark.parametrize(
    "mode,calls,ok",
    [
        ("auto", None, True),
        ("auto", [W], True),
        ("auto", [W, T], True),
        ("auto", [BAD_ENUM], False),
        ("auto", [MISSING], False),
        ("auto", [UNKNOWN], False),
        ("none", None, True),
        ("none", [W], False),
        ("required", [W], True),
        ("required", [T, W], True),
        ("required", None, False),
        ("required", [BAD_ENUM], False),
    ],
)
def test_constraint_modes(family, mode, calls, ok):
    name = family[0]
    text = answer(name, "Just text.") if calls is None else WRITE[name](calls)
    if name == "pythonic" and mode == "auto" and calls == [UNKNOWN]:
        ok = True  # "[rm_rf()]" opens no call of a listed tool: it is prose (and content)
    assert _accepts(family, mode, text) is ok


def test_pythonic_auto_leaves_brackets_in_prose_alone(tokenizer):
    tok = family_tokenizer(tokenizer, "pythonic")
    family = (
        "pythonic",
        tok,
        get_format("pythonic", tok),
        ConstraintCompiler(tok, len(tok), [tokenizer.eos_token_id]),
    )
    assert _accepts(family, "auto", "See [1] and [get_time] for details.")
    assert not _accepts(family, "auto", '[get_weather(city=3, unit="c")]')


def test_parallel_false_allows_one_call(family):
    write = WRITE[family[0]]
    assert _accepts(family, "required", write([W]), parallel=False)
    assert not _accepts(family, "required", write([W, T]), parallel=False)


def test_named_choice_forces_that_tool(family):
    write = WRITE[family[0]]
    assert _accepts(family, "named", write([T]), name="get_time")
    assert not _accepts(family, "named", write([W]), name="get_time")


TRICKY = (
    "get_weather",
    json.dumps(
        {
            "city": 'Pa"ris}] </tool_call> [TOOL_CALLS] ```<｜tool▁call▁end｜>',
            "unit": "c",
            "note": "\u00e9t\u00e9 ☕\nnew line",
        },
        ensure_ascii=False,
    ),
)


def _outputs(name):
    write = WRITE[name]
    out = [
        "Plain answer, no call.",
        write([W]),
        write([W, T]),
        write([TRICKY, T]),
        write([T]),
        write([UNKNOWN]),
    ]
    if name != "pythonic":  # pythonic output is the call list alone
        out.append("Let me check. " + write([W]))
    if name == "harmony":  # reasoning, a preamble, the answer, a call's spellings
        out += [
            "<|channel|>analysis<|message|>Weather: call it.<|end|><|start|>assistant" + write([W]),
            "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final"
            "<|message|>Sunny, 14C.<|return|>",
            "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant" + write([T]),
            '<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{ "a" :'
            ' "<|call|>" }<|call|>',
        ]
    return out


_FORMATS: dict[str, object] = {}


def _family_format(tokenizer, name):
    """The family's format, fitted to its tokenizer once: building the tokenizer (a deep copy of
    the embedded one) takes about a second, which each hypothesis example would otherwise pay."""
    if name not in _FORMATS:
        _FORMATS[name] = get_format(name, family_tokenizer(tokenizer, name))
    return _FORMATS[name]


def _run(fmt, text, cuts, tools=TOOLS):
    """(content, [(name, arguments)]) of text fed to the extractor in pieces cut at `cuts`."""
    ex = fmt.extractor(tools)
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    deltas = [ex.feed(p) for p in pieces] + [ex.finish()]
    calls: dict[int, list] = {}
    for d in deltas:
        for c in d.calls:
            entry = calls.setdefault(c.index, [None, ""])
            if c.name:
                assert entry[0] is None
                entry[0] = c.name
            entry[1] += c.arguments
    return "".join(d.content for d in deltas), [tuple(calls[i]) for i in sorted(calls)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_extraction_results(name, tokenizer):
    fmt = _family_format(tokenizer, name)
    content, calls = _run(fmt, WRITE[name]([TRICKY, T]), [])
    assert content == ""
    assert [n for n, _ in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0][1]) == json.loads(TRICKY[1])
    assert calls[1][1] == "{}"
    unknown = WRITE[name]([UNKNOWN])
    # Not a call: content, never dropped (less the blank line DSML writes before its block).
    assert _run(fmt, unknown, []) == (unknown.strip(), [])


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(list(FAMILIES)), data=st.data())
def test_any_chunking_gives_the_same_result(tokenizer, name, data):
    fmt = _family_format(tokenizer, name)
    text = data.draw(st.sampled_from(_outputs(name)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=len(text)))))
    assert _run(fmt, text, cuts) == _run(fmt, text, [])


@pytest.mark.parametrize("name", list(FAMILIES))
def test_one_character_at_a_time(name, tokenizer):
    fmt = _family_format(tokenizer, name)
    for text in _outputs(name):
        assert _run(fmt, text, list(range(1, len(text)))) == _run(fmt, text, [])
