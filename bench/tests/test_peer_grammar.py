"""The peer's tool requests (bench/peer_grammar.py): the call schema it is constrained by, and
the check that what it wrote is a call."""

import json

import xgrammar as xgr
from xgrammar.testing import _is_grammar_accept_string

from bench.peer_grammar import call_schema, is_call
from bench.workloads import WEATHER

OTHER = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}},
    },
}


def _accepts(schema: dict, text: str) -> bool:
    grammar = xgr.Grammar.from_json_schema(json.dumps(schema), strict_mode=True)
    return _is_grammar_accept_string(grammar, text)


def test_one_tool_schema_is_the_call_object():
    schema = call_schema([WEATHER])
    call = '{"name": "get_weather", "arguments": {"location": "Paris", "unit": "c"}}'
    assert _accepts(schema, call)
    assert not _accepts(
        schema, '{"name": "get_time", "arguments": {"location": "Paris", "unit": "c"}}'
    )
    assert not _accepts(schema, '{"name": "get_weather", "arguments": {"location": "Paris"}}')


def test_several_tools_any_of_them():
    schema = call_schema([WEATHER, OTHER])
    assert _accepts(schema, '{"name": "get_time", "arguments": {"zone": "UTC"}}')
    assert _accepts(
        schema, '{"name": "get_weather", "arguments": {"location": "Oslo", "unit": "f"}}'
    )


def test_is_call():
    tools = [WEATHER]
    assert is_call('{"name": "get_weather", "arguments": {"location": "Rome"}}', tools)
    assert not is_call('{"name": "get_weather", "arguments": "x"}', tools)
    assert not is_call('{"name": "other", "arguments": {}}', tools)
    assert not is_call("It is sunny in Rome.", tools)
    assert not is_call('{"name": "get_weather", "arguments": {', tools)
