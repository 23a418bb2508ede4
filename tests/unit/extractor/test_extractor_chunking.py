"""The streaming extractor gives the same result however the output is chunked."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from toolwire.formats import Tool, get_format

TOOLS = [Tool("get_weather", parameters={"type": "object"}), Tool("get_time")]

OUTPUTS = [
    "Plain answer with no call.",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    'Checking. <tool_call>\n{"name": "get_weather", "arguments": {"q": "a \\"}\\" </tool_call> {"}}'
    '\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": {"s": "\\u00e9t\\u00e9\\n", "n": [1, {"a": []}]}}'
    "\n</tool_call>",
    "I think <tool_call> is a tag.",  # a marker that does not open a real call
    '<tool_call>\n{"name": "unknown_tool", "arguments": {}}\n</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": 42}\n</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": {"cut": "mid',  # max tokens mid-call
    "Thé café ☕ <tool_ca",
]


def run(text: str, cuts: list[int]):
    ex = get_format("hermes").extractor(TOOLS)
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    deltas = [ex.feed(p) for p in pieces] + [ex.finish()]
    content = "".join(d.content for d in deltas)
    calls: dict[int, list] = {}
    for d in deltas:
        for c in d.calls:
            entry = calls.setdefault(c.index, [None, None, ""])
            if c.id:
                assert entry[0] is None, "a call announced twice"
                entry[0], entry[1] = c.id, c.name
            entry[2] += c.arguments
    return content, [(name, args) for _, name, args in (calls[i] for i in sorted(calls))]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(OUTPUTS), st.data())
def test_any_chunking_gives_the_same_result(text, data):
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=len(text)))))
    whole = run(text, [])
    assert run(text, cuts) == whole


def test_every_single_character_chunking():
    for text in OUTPUTS:
        assert run(text, list(range(1, len(text)))) == run(text, [])


def test_results_of_the_outputs():
    content, calls = run(OUTPUTS[2], [])
    assert content == "Checking."
    assert [n for n, _ in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0][1]) == {"q": 'a "}" </tool_call> {'}
    assert calls[1][1] == "{}"
    # Broken calls come back as content, never dropped.
    assert run(OUTPUTS[4], [])[0] == OUTPUTS[4]
    assert run(OUTPUTS[5], []) == (OUTPUTS[5], [])
    assert run(OUTPUTS[6], []) == (OUTPUTS[6], [])
    assert run(OUTPUTS[8], []) == ("Thé café ☕ <tool_ca", [])
    # A call cut by max tokens keeps what was streamed.
    assert run(OUTPUTS[7], []) == ("", [("get_weather", '{"cut": "mid')])
