"""When a streamed call's name goes out. Under tool_choice required or named the
constraint makes the output calls only, so the hermes extractor announces a call as soon as its
header is complete: the forced opening the engine hands over before any forward pass
(`<tool_call>\\n{"name": "get_weather", "arguments":`, jump-forward's last token held back) is
enough for the first delta. Under auto a header may still turn out not to be a call (the model
writes it freely), so the name waits, as before, for the arguments to open."""

from __future__ import annotations

import pytest

from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.services.extractor.extraction import Extraction

OPENING = '<tool_call>\n{"name": "get_weather", "arguments":'
TOOLS = [
    common.FunctionTool(name="get_weather", parameters_json='{"type": "object"}'),
    common.FunctionTool(name="get_time"),
]
CHOICES = {
    "required": common.ToolChoice(mode=common.ToolChoice.MODE_REQUIRED),
    "named": common.ToolChoice(function_name="get_weather"),
    "auto": common.ToolChoice(mode=common.ToolChoice.MODE_AUTO),
}


def _stream(tokenizer, choice: str, texts: list[str]) -> list[pb.ExtractResponse | None]:
    ex = Extraction(
        pb.ExtractSetup(tool_format="hermes", tools=TOOLS, tool_choice=CHOICES[choice]),
        tokenizer,
        "hermes",
    )
    return [ex.tokens(tokenizer.encode(t, add_special_tokens=False)) for t in texts]


@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_opening_announces_the_call(tokenizer, choice):
    first, rest = _stream(tokenizer, choice, [OPENING, ' {"location": "Oslo"}}\n</tool_call>'])
    assert [(c.index, c.name, c.arguments) for c in first.tool_calls] == [(0, "get_weather", "")]
    assert first.tool_calls[0].id
    assert [(c.name, c.id) for c in rest.tool_calls] == [("", "")]  # announced once
    assert rest.tool_calls[0].arguments == '{"location": "Oslo"}'


def test_under_auto_the_name_waits_for_the_arguments(tokenizer):
    first, rest = _stream(tokenizer, "auto", [OPENING, ' {"location": "Oslo"}}\n</tool_call>'])
    assert first is None
    assert rest.tool_calls[0].name == "get_weather"
    assert rest.tool_calls[0].arguments == '{"location": "Oslo"}'
