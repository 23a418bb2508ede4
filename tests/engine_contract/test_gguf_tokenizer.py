"""The ggml step's tokenizer is the GGUF's own, through llama.cpp (services/decode/gguf_tokenizer.py):
the grammar it masks with, its eos and the ids it gives forced text must be what the template's
and the extractor's tokenizer (transformers', converted from the same GGUF) would give."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.unit.constraints.constraint_shapes import FORMATS, TOOLS
from tests.unit.formats.test_formats import WRITE, T, W
from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.formats import ToolChoice
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.runtime import model_source
from toolwire.services.decode.gguf_tokenizer import GgufTokenizer, check_agrees, vocabulary
from toolwire.services.decode.steps.ggml import GgmlStep


@pytest.fixture(scope="module")
def gguf():
    src = model_source.resolve("embedded")
    step = GgmlStep(pathlib.Path(src.folder, src.gguf_file), 1, kv_tokens=256, n_batch=64)
    yield GgufTokenizer(step, src)
    step.close()


@pytest.fixture(scope="module")
def compiler(gguf):
    from toolwire.constraints.compiler import ConstraintCompiler

    return ConstraintCompiler(gguf, len(gguf), [gguf.eos_token_id], info=gguf.info)


def test_its_grammar_vocabulary_and_eos_are_the_template_tokenizers(gguf, tokenizer):
    assert len(gguf) == len(tokenizer)
    assert gguf.eos_token_id == tokenizer.eos_token_id
    reference = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id]
    )
    assert gguf.info.serialize_json() == reference.serialize_json()


def forced_texts(compiler, fmt, choice: ToolChoice, encode) -> list[str]:
    """Every text the format's grammar forces on one path through it: each jump's text is
    taken in the GGUF's ids, and where nothing is forced the lowest-numbered token the grammar
    admits (a stop aside) is taken."""
    c = build_constraint(fmt, TOOLS, choice, False, common.ResponseFormat())
    matcher = xgr.GrammarMatcher(compiler.compile_constraint(c))
    mask = xgr.allocate_token_bitmask(1, compiler.info.vocab_size)
    texts = []
    for _ in range(80):
        if matcher.is_completed():
            break
        try:
            text = matcher.find_jump_forward_string()
        except UnicodeDecodeError:  # forced bytes inside a character: no jump there
            text = ""
        if text:
            texts.append(text)
            for t in encode(text):
                assert matcher.accept_token(t), (text, t)
            continue
        matcher.fill_next_token_bitmask(mask, 0)
        bits = np.unpackbits(mask.view(np.uint8)[0], bitorder="little")
        allowed = [int(t) for t in np.flatnonzero(bits[: compiler.info.vocab_size]) if t != 2]
        assert allowed, "a grammar that is not complete admits a token"
        assert matcher.accept_token(allowed[0])
    return texts


@pytest.mark.parametrize("mode", ["required", "named"])
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_formats_forced_text_gets_the_template_tokenizers_ids(
    gguf, tokenizer, compiler, name, mode
):
    choice = ToolChoice(mode, "get_weather" if mode == "named" else None)
    texts = forced_texts(compiler, FORMATS[name], choice, gguf.encode)
    assert texts, "each format forces its markers"
    for text in texts:
        assert gguf.encode(text) == tokenizer.encode(text, add_special_tokens=False), text


@pytest.mark.parametrize("name", sorted(WRITE))
def test_every_formats_calls_as_a_model_writes_them_get_the_same_ids(gguf, tokenizer, name):
    text = "Let me check.\n" + WRITE[name]([W, T])
    assert gguf.encode(text) == tokenizer.encode(text, add_special_tokens=False), text


def test_a_tokenizer_that_names_other_tokens_is_refused(gguf):
    texts = vocabulary(gguf.step)
    converted, _ = model_source.gguf_tokenizer_files(model_source.resolve("embedded"))
    check_agrees(texts, converted)  # as converted: agrees
    parsed = json.loads(converted)
    added = parsed["added_tokens"]
    added[0] = {**added[0], "content": "<|not the gguf's|>"}
    with pytest.raises(SystemExit, match="differ at ids"):
        check_agrees(texts, json.dumps(parsed))
    with pytest.raises(SystemExit, match="tokens, the tokenizer"):
        check_agrees(texts[:100], converted)


def test_the_ggml_engine_loads_no_tokenizer_library():
    """The decode process on the ggml step, as it loads (torch kept out, as the service does):
    neither transformers nor the tokenizers library."""
    script = """
import sys
from toolwire.runtime.without_torch import keep_torch_out
keep_torch_out()
import services.decode.server
from services.decode.batch_engine import BatchEngine
engine = BatchEngine("embedded", max_batch=2, kv_tokens=512, step="ggml", speculation="off")
engine.load()
print(type(engine.tokenizer).__name__, sorted(
    m for m in sys.modules if m.split(".")[0] in ("transformers", "tokenizers")))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["GgufTokenizer", "[]"], out.stdout + out.stderr
