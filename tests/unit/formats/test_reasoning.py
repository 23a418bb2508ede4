"""Thinking models: reasoning text goes to reasoning_content, never into tool arguments, and
the constraint lets the reasoning run free and applies at the call."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import Tool, get_format
from toolwire.formats.reasoning import STARTED, ReasoningExtractor
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.template.v1 import template_pb2
from toolwire.services.template.server import TemplateServicer

from .family_tokenizers import thinking_tokenizer

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
THOUGHT = 'The user wants weather. I could write <tool_call>{"name": "x"}</tool_call> but no.'
TOOLS = [
    Tool(
        "get_weather",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        strict=True,
    )
]


def _run(text, cuts, mode=STARTED):
    ex = ReasoningExtractor(get_format("hermes").extractor(TOOLS), mode)
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    deltas = [ex.feed(p) for p in pieces] + [ex.finish()]
    args = "".join(c.arguments for d in deltas for c in d.calls)
    names = [c.name for d in deltas for c in d.calls if c.name]
    return ("".join(d.reasoning for d in deltas), "".join(d.content for d in deltas), names, args)


def test_reasoning_is_split_from_the_call():
    reasoning, content, names, args = _run(f"{THOUGHT}\n</think>\n\n{CALL}", [])
    assert reasoning == THOUGHT
    assert content == "" and names == ["get_weather"] and args == '{"city": "Paris"}'


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_chunking(data):
    text = f"{THOUGHT}\n</think>\n\nSure. {CALL}"
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=len(text)))))
    assert _run(text, cuts) == _run(text, [])


def test_optional_thinking_opened_by_the_model():
    assert _run(f"<think>{THOUGHT}</think>{CALL}", [], mode="optional")[0] == THOUGHT
    assert _run(CALL, [], mode="optional")[2] == ["get_weather"]


def _servicer(tokenizer):
    tok = thinking_tokenizer(tokenizer)
    return tok, TemplateServicer(tok, get_format("hermes", tok), "m", 8192, len(tok))


def test_constraint_lets_reasoning_run_free_then_forces_the_call(tokenizer):
    tok, servicer = _servicer(tokenizer)
    r = servicer.render(
        template_pb2.RenderChatRequest(
            messages=[common.ChatMessage(role="user", content="Weather in Paris?")],
            tools=[
                common.FunctionTool(
                    name="get_weather", strict=True, parameters_json=json.dumps(TOOLS[0].parameters)
                )
            ],
            tool_choice=common.ToolChoice(mode=common.ToolChoice.MODE_REQUIRED),
        )
    )
    assert r.reasoning == STARTED and r.prompt_text.endswith("<think>\n")
    compiler = ConstraintCompiler(tok, len(tok), servicer.stop_ids)
    grammar = compiler.compile_constraint(r.constraint)

    def ok(text):
        m = xgr.GrammarMatcher(grammar)
        return m.accept_string(text) and m.accept_token(tok.eos_token_id) and m.is_terminated()

    assert ok(f"{THOUGHT}\n</think>\n\n{CALL}".replace("\n\n<tool_call>", "<tool_call>"))
    assert ok(f"{THOUGHT}</think>{CALL}")
    assert not ok(f"{THOUGHT}</think>No call at all.")
    assert not ok(f"{THOUGHT}</think>" + CALL.replace('"Paris"', "42"))
