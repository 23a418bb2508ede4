"""mistral on a real Mistral vocabulary: Tekken `tekken_240911.json` from PyPI `mistral-common`
(a test dependency), the 131k vocabulary of Mistral Nemo / Pixtral 12B, converted offline into
a fast tokenizer by transformers' tekken converter (about 3 s of CPU, once per module).

The file is a v3 tokenizer: its special tokens are mistral-common's 20 defaults and [ARGS] is
not among them (nor in tekken_240718.json), so the format falls back to the JSON list
`[TOOL_CALLS] [{"name": ..., "arguments": ...}]`. Checked here: the markers are single special
tokens, the constraint compiled over the real token ids (every tool_choice mode) accepts a
call written as real tokens and refuses a bad one, and the extractor fed one real token at a
time, decoded as the extractor service does, gives the non-streamed result."""

from __future__ import annotations

import json
import pathlib

import pytest

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import ToolChoice, detect_format, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.services.extractor.detokenizer import IncrementalDetokenizer

from .test_formats import WEATHER
from .test_xml_formats import ARGS, TYPED

TOOLS = [TYPED, WEATHER]


@pytest.fixture(scope="session")
def tekken_path():
    import mistral_common

    return pathlib.Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"


@pytest.fixture(scope="session")
def tekken(tekken_path, tmp_path_factory):
    """The converted tokenizer. The v3 file lists no special tokens (mistral-common supplies
    them), and transformers' converter only reads them from mistral-common 1.11.5 on, which
    caps numpy below 2.4 on Python 3.11: the list is written into a copy of the file here."""
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.mistral.tokenizer import MistralConverter

    raw = json.loads(tekken_path.read_text())
    assert "special_tokens" not in raw and raw["config"]["version"] == "v3"
    raw["special_tokens"] = [
        {**s, "token_str": str(s["token_str"].value)} for s in Tekkenizer.DEPRECATED_SPECIAL_TOKENS
    ]
    copy = tmp_path_factory.mktemp("tekken") / "tekken.json"
    copy.write_text(json.dumps(raw))
    return PreTrainedTokenizerFast(
        tokenizer_object=MistralConverter(vocab_file=str(copy)).converted(),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


@pytest.fixture(scope="session")
def compiler(tekken):
    return ConstraintCompiler(tekken, len(tekken), [tekken.eos_token_id])


def _call(*calls: tuple[str, dict], space: str = "") -> str:
    body = ", ".join(json.dumps({"name": n, "arguments": a}, ensure_ascii=False) for n, a in calls)
    return f"[TOOL_CALLS]{space}[{body}]"


def _ids(tekken, text: str) -> list[int]:
    return tekken.encode(text, add_special_tokens=False)


def test_the_markers_are_the_vocabularys_special_tokens(tekken, tekken_path):
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    native = Tekkenizer.from_file(str(tekken_path))
    assert len(tekken) == native.n_words == 131072
    for marker in ("[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"):
        (i,) = _ids(tekken, marker)
        assert native.id_to_piece(i) == marker
    # No [ARGS]: the format detected from this vocabulary writes the JSON list.
    assert "[ARGS]" not in tekken.get_vocab()
    assert detect_format(tekken) == "mistral"
    assert get_format("mistral", tekken).args_token is False
    # The conversion splits text as mistral-common's own tokenizer does.
    body = _call(("book", {**ARGS, "name": "Zoë ☕ 毕老师"}))[len("[TOOL_CALLS]") :]
    assert _ids(tekken, body) == native.encode(body, bos=False, eos=False)


def _accepts(compiled, ids: list[int], stop: int) -> bool:
    m = xgr.GrammarMatcher(compiled)
    return all(m.accept_token(i) for i in ids) and m.accept_token(stop)


@pytest.mark.parametrize(
    "choice, good, bad",
    [
        # auto: text, then a call; a mistyped call is refused.
        (ToolChoice("auto"), "Booking. {call}", "Booking. {mistyped}"),
        # required: a call straight away; text alone is refused.
        (ToolChoice("required"), "{call}", "Booking."),
        # named: the named tool only.
        (ToolChoice("named", "book"), "{call}", "{weather}"),
        # allowed_tools: the call names an allowed tool; the other is refused.
        (ToolChoice("required", allowed=("book",)), "{call}", "{weather}"),
        # none: text only; the call marker is refused.
        (ToolChoice("none"), "Booking.", "Booking. {call}"),
    ],
)
def test_the_constraint_takes_the_real_tokens_of_a_call(tekken, compiler, choice, good, bad):
    fmt = get_format("mistral", tekken)
    c = build_constraint(fmt, TOOLS, choice, True, common.ResponseFormat())
    compiled = compiler.compile_constraint(c)
    texts = {
        "call": _call(("book", ARGS)),
        "mistyped": _call(("book", {**ARGS, "seats": "four"})),
        "weather": _call(("get_weather", {"city": "Paris", "unit": "c"})),
    }
    eos = tekken.eos_token_id
    assert _accepts(compiled, _ids(tekken, good.format(**texts)), eos)
    assert not _accepts(compiled, _ids(tekken, bad.format(**texts)), eos)


def test_parallel_calls_in_one_list(tekken, compiler):
    fmt = get_format("mistral", tekken)
    c = build_constraint(fmt, TOOLS, ToolChoice("required"), True, common.ResponseFormat())
    two = _call(("book", ARGS), ("get_weather", {"city": "Rome", "unit": "f"}))
    assert _accepts(compiler.compile_constraint(c), _ids(tekken, two), tekken.eos_token_id)
    single = build_constraint(fmt, TOOLS, ToolChoice("required"), False, common.ResponseFormat())
    assert not _accepts(compiler.compile_constraint(single), _ids(tekken, two), tekken.eos_token_id)


def test_the_constraint_takes_mistral_commons_own_spacing(tekken, compiler):
    """mistral-common's v3 Tekken encoder writes `[TOOL_CALLS][` (no space): the list form
    on a Tekken vocabulary opens so, and the sentencepiece spacing is refused there."""
    fmt = get_format("mistral", tekken)
    c = build_constraint(fmt, TOOLS, ToolChoice("required"), True, common.ResponseFormat())
    text = _call(("book", ARGS), space="")
    assert _accepts(compiler.compile_constraint(c), _ids(tekken, text), tekken.eos_token_id)
    spaced = _call(("book", ARGS), space=" ")
    assert not _accepts(compiler.compile_constraint(c), _ids(tekken, spaced), tekken.eos_token_id)


@pytest.mark.parametrize("space", [" ", ""])
def test_the_extractor_fed_real_tokens_gives_the_whole_result(tekken, space):
    args = {**ARGS, "name": "Zoë ☕ 毕老师"}
    # With mistral-common's own trailing id ("id" after the arguments, as its v3 encoder writes).
    body = json.dumps([{"name": "book", "arguments": args, "id": "abc123def"}], ensure_ascii=False)
    text = f"Booking.[TOOL_CALLS]{space}{body}"
    fmt = get_format("mistral", tekken)
    whole = fmt.extractor([TYPED]).parse_complete(text)
    ex, detok = fmt.extractor([TYPED]), IncrementalDetokenizer(tekken)
    ids = _ids(tekken, text)
    assert tekken.convert_tokens_to_ids("[TOOL_CALLS]") in ids
    deltas = [ex.feed(detok.add([i])) for i in ids]
    deltas += [ex.feed(detok.flush()), ex.finish()]
    assert "".join(d.content for d in deltas) == whole.content == "Booking."
    streamed = "".join(c.arguments for d in deltas for c in d.calls)
    assert streamed == "".join(c.arguments for c in whole.calls)
    assert json.loads(streamed) == args
    assert [c.name for d in deltas for c in d.calls if c.name] == ["book"]
