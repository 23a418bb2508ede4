"""A turn ends on the model's turn-end tokens, not only the tokenizer's eos: GLM's eos is
<|endoftext|>, and it ends a turn with <|user|> (an answer) or <|observation|> (after calls).
The constraint (real xgrammar) lets those through where the grammar may end, and nowhere else."""

from __future__ import annotations

import json

from services.template.stop_tokens import generation_config_eos, stop_token_ids
from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import ToolChoice, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common

from .family_tokenizers import family_tokenizer
from .test_formats import TOOLS, WRITE, W


def test_glm_turn_ends(tokenizer):
    tok = family_tokenizer(tokenizer, "glm47")
    ids = stop_token_ids(tok, get_format("glm47", tok))
    wanted = {tok.eos_token_id, *tok.convert_tokens_to_ids(["<|user|>", "<|observation|>"])}
    assert set(ids) == wanted


def test_a_family_without_extra_turn_ends_stops_on_eos(tokenizer):
    assert stop_token_ids(tokenizer, get_format("hermes", tokenizer)) == [tokenizer.eos_token_id]


def test_turn_end_tokens_absent_from_the_vocabulary_are_skipped(tokenizer):
    # The embedded vocabulary has no <|observation|>: GLM's format on it stops on eos alone.
    assert stop_token_ids(tokenizer, get_format("glm47", tokenizer)) == [tokenizer.eos_token_id]


def test_generation_config_eos(tmp_path, tokenizer):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 9]}))
    assert generation_config_eos(str(tmp_path)) == [7, 9]
    fmt = get_format("hermes", tokenizer)
    assert stop_token_ids(tokenizer, fmt, str(tmp_path)) == sorted({tokenizer.eos_token_id, 7, 9})
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    assert generation_config_eos(str(tmp_path)) == [5]
    assert generation_config_eos(str(tmp_path / "absent")) == []


def _matcher(tok, mode):
    fmt = get_format("glm47", tok)
    compiler = ConstraintCompiler(tok, len(tok), stop_token_ids(tok, fmt))
    c = build_constraint(fmt, TOOLS, ToolChoice(mode), True, common.ResponseFormat())
    return xgr.GrammarMatcher(compiler.compile_constraint(c))


def test_constraint_ends_the_turn_on_glm_turn_end_tokens(tokenizer):
    tok = family_tokenizer(tokenizer, "glm47")
    user, observation = tok.convert_tokens_to_ids(["<|user|>", "<|observation|>"])
    call = WRITE["glm47"]([W])
    m = _matcher(tok, "required")
    assert m.accept_string(call) and m.accept_token(observation) and m.is_terminated()
    m = _matcher(tok, "auto")
    assert m.accept_string("It is sunny.") and m.accept_token(user) and m.is_terminated()
    # Not in the middle of a call: the grammar may not end there.
    m = _matcher(tok, "required")
    assert m.accept_string(call[:12]) and not m.accept_token(observation)
