"""The constraint dialects' pure parts: which engine takes which, how a pool agrees on one, and
the rewriting of xgrammar 0.2's free text with triggers and bans (TagDispatch) into plain rules,
checked against the definition by brute force."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.dialects import (
    EBNF,
    STRUCTURAL_TAG,
    DialectError,
    accepts,
    common_dialect,
    engine_dialect,
)
from toolwire.constraints.ebnf import to_ebnf_0125
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.errors import RequestError
from toolwire.formats import Tool, ToolChoice, get_format
from toolwire.gateway.metrics import Metrics
from toolwire.gateway.orchestrator import Orchestrator
from toolwire.gateway.replicas import Replica, ReplicaSet
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.plumbing.internal_security import ClientSecurity
from toolwire.services.decode.engine import EngineRequestError
from toolwire.services.decode.trtllm_engine import guided_decoding

VOCAB = ["<", "/", "t", "o", "l", "x", "_", "c", "a", ">"]


def test_each_engine_says_its_dialect():
    assert engine_dialect("0.2.8") == STRUCTURAL_TAG
    assert engine_dialect("0.1.25") == EBNF
    assert engine_dialect("0.1.34") == EBNF


def test_a_mixed_pool_builds_grammars_every_engine_takes():
    assert common_dialect([STRUCTURAL_TAG, STRUCTURAL_TAG]) == STRUCTURAL_TAG
    assert common_dialect([STRUCTURAL_TAG, EBNF]) == EBNF
    assert common_dialect([]) == STRUCTURAL_TAG
    assert accepts(STRUCTURAL_TAG, EBNF) and accepts(EBNF, EBNF)
    assert not accepts(EBNF, STRUCTURAL_TAG)


class _Stream:
    """A replica's stream as the set reads it: this gateway's requests open on it."""

    def __init__(self, load: int = 0):
        self.load = load

    async def close(self) -> None:
        pass


def test_the_gateway_sends_a_constraint_only_to_replicas_that_take_it():
    orch = Orchestrator("t:1", [], "x:1", [], Metrics())
    orch.decode = ReplicaSet("decode replica", [], ClientSecurity(), lambda a, ch: _Stream())
    torch_replica = Replica("a:1", None, _Stream(), dialect=STRUCTURAL_TAG)
    trtllm_replica = Replica("b:1", None, _Stream(load=5), dialect=EBNF)
    unread = Replica("c:1", None, _Stream())  # serving, its dialect not read yet
    orch.decode.replicas = {r.address: r for r in (torch_replica, trtllm_replica, unread)}
    decode, takes = orch.decode, orch.takes
    # The grammar is built in the dialect every serving replica that said one takes.
    assert orch.dialect() == EBNF
    assert decode.order(takes(STRUCTURAL_TAG)) == [torch_replica]
    # The least loaded of those taking it first; one not read yet takes nothing.
    assert decode.order(takes(EBNF)) == [torch_replica, trtllm_replica]
    assert decode.order(takes(EBNF), exclude={"a:1"}) == [trtllm_replica]
    torch_replica.stream.load = 9
    assert decode.order(takes(EBNF)) == [trtllm_replica, torch_replica]
    torch_replica.stream.load = 5
    torch_replica.picks = 1  # an even load: the least picked first
    assert decode.order(takes(EBNF)) == [trtllm_replica, torch_replica]
    decode.mark_down(torch_replica)
    assert not torch_replica.healthy and torch_replica.dialect is None
    assert decode.order(takes(STRUCTURAL_TAG)) == []
    assert decode.order(takes(EBNF)) == [trtllm_replica]
    assert orch.dialect() == EBNF
    trtllm_replica.healthy = False
    assert orch.dialect() == STRUCTURAL_TAG  # no replica says one: xgrammar 0.2's


def _free_text(words_banned: list[str], triggers: list[str] = ()) -> str:
    pairs = "".join(f'  ("{t}", call_{i}),\n' for i, t in enumerate(triggers))
    calls = "".join(f'call_{i} ::= (("X"))\n' for i in range(len(triggers)))
    banned = ", ".join(f'"{w}"' for w in words_banned)
    return (
        f"{calls}text ::= TagDispatch(\n{pairs}  loop_after_dispatch=true,\n"
        f"  excludes=({banned})\n)\nroot ::= ((text))\n"
    )


def _matches(compiled, s: str) -> bool:
    m = xgr.GrammarMatcher(compiled)
    return m.accept_string(s) and (m.is_terminated() or m.accept_token(len(VOCAB) + 1))


@pytest.fixture(scope="module")
def compiler():
    info = xgr.TokenizerInfo(VOCAB + ["X", "<eos>"], stop_token_ids=[len(VOCAB) + 1])
    return xgr.GrammarCompiler(info)


def test_banned_strings_never_appear_and_nothing_else_is_refused(compiler):
    # Overlapping words, one inside another: the cases an automaton gets wrong.
    banned = ["<tool", "</tool", "<tool_call>", "ll", "oo", "tot_"]
    grammar = compiler.compile_grammar(to_ebnf_0125(_free_text(banned)))
    for n in range(7):
        for chars in itertools.product("</tol_", repeat=n):
            s = "".join(chars)
            assert _matches(grammar, s) == (not any(w in s for w in banned)), s


def test_a_trigger_goes_on_with_its_rule(compiler):
    text = to_ebnf_0125(_free_text(["</t"], triggers=["<t>"]))
    grammar = compiler.compile_grammar(text)
    for s, ok in [
        ("<t>X", True),
        ("o<t>Xt", True),
        ("<t>", False),
        ("<t>t", False),
        ("</t", False),
        ("<<t>X<t>X", True),
        ("<x>", True),
    ]:
        assert _matches(grammar, s) == ok, s


def test_what_the_old_version_cannot_read_is_refused_not_loosened():
    with pytest.raises(DialectError):
        to_ebnf_0125(_free_text(["<｜tool▁calls▁begin｜>"]))  # non-ASCII: 0.1.25 mis-reads it
    with pytest.raises(DialectError):
        to_ebnf_0125("t ::= TagDispatch(\n  loop_after_dispatch=true,\n  new_option=1\n)")
    assert to_ebnf_0125('root ::= "a"{0, -1} "b"{1, -1} "c"{2, -1}') == 'root ::= "a"* "b"+ "c"{2,}'


def test_a_schema_pattern_the_old_version_misreads_is_refused():
    from toolwire.constraints.compiler import in_dialect

    def schema(pattern):
        return Constraint(
            Kind.JSON_SCHEMA,
            json.dumps(
                {
                    "type": "object",
                    "properties": {"word": {"type": "string", "pattern": pattern}},
                    "required": ["word"],
                }
            ),
        )

    cyrillic = schema("^[а-я]+$")
    with pytest.raises(DialectError) as e:
        in_dialect(cyrillic, EBNF)
    assert e.value.schema
    assert in_dialect(schema("^[a-z]+$"), EBNF).kind is Kind.EBNF
    # Every character (plain free text), and non-ASCII text in string literals (an enum), read
    # alike in both versions.
    assert to_ebnf_0125("root ::= (([\\0-\\U0010ffff]*))") == "root ::= (([\\0-\\U0010ffff]*))"
    assert (
        in_dialect(Constraint(Kind.JSON_SCHEMA, json.dumps({"enum": ["éte", "｜"]})), EBNF).kind
        is Kind.EBNF
    )


def test_a_mode_the_engine_cannot_enforce_is_a_400_naming_it(tmp_path):
    from toolwire.constraints.pool import CompilePool
    from toolwire.services.template.server import TemplateServicer

    info = xgr.TokenizerInfo(VOCAB + ["<eos>"], stop_token_ids=[len(VOCAB)])
    clock = [Tool("get_time", "", None)]
    cyrillic = [
        Tool(
            "spell",
            "",
            {"type": "object", "properties": {"w": {"type": "string", "pattern": "^[а-я]+$"}}},
            strict=True,
        )
    ]

    async def check(pool, fmt_name, tools, mode):
        """The constraint the template would send, or the RequestError it would answer."""
        fmt = get_format(fmt_name)
        servicer = TemplateServicer(_Tok(), fmt, "m", 4096, len(VOCAB) + 1, pool)
        c = build_constraint(fmt, tools, ToolChoice(mode), True, common.ResponseFormat())
        try:
            return await servicer.check_constraint(c, True, EBNF)
        except RequestError as e:
            return e

    async def all_three():
        pool = CompilePool(info.serialize_json(), workers=1)  # a real worker process
        await pool.start()
        try:
            return [
                await check(pool, *case)
                for case in (
                    ("deepseek_v3", clock, "auto"),
                    ("deepseek_v3", clock, "required"),
                    ("hermes", cyrillic, "required"),
                )
            ]
        finally:
            pool.close()

    free_text, forced, pattern = asyncio.run(all_three())
    assert (free_text.param, free_text.code, free_text.status) == (
        "tool_choice",
        "unsupported_by_engine",
        400,
    )
    assert "deepseek_v3" in free_text.message and "required" in free_text.message
    assert forced.WhichOneof("kind") == "ebnf"
    # The cause is the schema: the param says so.
    assert (pattern.param, pattern.code) == ("tools", "unsupported_by_engine")


class _Tok:
    eos_token_id = 0


def test_trtllm_takes_grammars_only():
    assert guided_decoding(dict, Constraint(Kind.EBNF, 'root ::= "a"')) == {
        "grammar": 'root ::= "a"'
    }
    assert guided_decoding(dict, Constraint(Kind.REGEX, "a+")) == {"regex": "a+"}
    assert guided_decoding(dict, None) is None
    for kind in (Kind.JSON_SCHEMA, Kind.STRUCTURAL_TAG):
        with pytest.raises(EngineRequestError) as e:
            guided_decoding(dict, Constraint(kind, json.dumps({"type": "object"})))
        assert e.value.param == "constraint" and EBNF in str(e.value)


def test_xml_style_families_mean_the_same_as_grammars():
    """qwen3_coder and glm47 constraints (raw string values: free text that may not hold the
    value's close tag) as EBNF, against the structural tag, on a character vocabulary."""
    from toolwire.constraints.compiler import grammar_of, in_dialect

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    info = xgr.TokenizerInfo(chars + ["<eos>"], stop_token_ids=[len(chars)])
    compiler = xgr.GrammarCompiler(info)
    tool = Tool(
        "book",
        "",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "seats": {"type": "integer"}},
            "required": ["name", "seats"],
            "additionalProperties": False,
        },
        strict=True,
    )

    def verdict(grammar, s):
        m = xgr.GrammarMatcher(compiler.compile_grammar(grammar))
        return m.accept_string(s) and m.accept_token(len(chars))

    cases = {
        "qwen3_coder": (
            "<tool_call>\n<function=book>\n<parameter=name>\n{}\n</parameter>\n"
            "<parameter=seats>\n{}\n</parameter>\n</function>\n</tool_call>"
        ),
        "glm47": (
            "<tool_call>book<arg_key>name</arg_key><arg_value>{}</arg_value>"
            "<arg_key>seats</arg_key><arg_value>{}</arg_value></tool_call>"
        ),
    }
    for name, layout in cases.items():
        fmt = get_format(name)
        for mode in ("auto", "required"):
            built = build_constraint(fmt, [tool], ToolChoice(mode), True, common.ResponseFormat())
            st = Constraint(Kind.STRUCTURAL_TAG, built.structural_tag)
            ebnf = in_dialect(st, EBNF)
            assert ebnf.kind is Kind.EBNF
            probes = [
                layout.format("Ada <b>", 4),
                layout.format("Ada", "four"),
                layout.format("a </parameter> b", 4),
                layout.format("a </arg_value> b", 4),
                "Just text.",
            ]
            want = [verdict(grammar_of(st), p) for p in probes]
            assert [verdict(grammar_of(ebnf), p) for p in probes] == want
            assert want[0] and not want[1] and want[4] == (mode == "auto")
