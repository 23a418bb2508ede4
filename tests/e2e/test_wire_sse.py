"""The raw SSE wire shape of streamed tool calls (docs/wire-rules.md, rule 2), checked against the
recorded OpenAI streams when ../shared is present."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from tests.e2e.sse import post_stream, read_recorded
from tests.tools_fixtures import NO_PARAMS, WEATHER

RECORDED = pathlib.Path(
    os.environ.get(
        "TOOLWIRE_RECORDED_STREAMS",
        pathlib.Path(__file__).resolve().parents[3] / "shared/reference/openai-recorded-streams",
    )
)


def _tool_stream(stack, **extra):
    body = {
        "model": stack.model,
        "stream": True,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Weather in Paris and in Rome?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
    }
    body.update(extra)
    return post_stream(stack, body)


def test_tool_call_stream_shape(stack):
    events = _tool_stream(stack, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    usage = chunks[-1]
    assert (
        usage["choices"] == []
        and usage["usage"]["total_tokens"]
        == usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    )
    last = chunks[-2]["choices"][0]
    assert last["delta"] == {} and last["finish_reason"] == "tool_calls"
    seen: dict[int, str] = {}
    for c in chunks[1:-2]:
        assert c["choices"][0]["finish_reason"] is None
        for d in c["choices"][0]["delta"].get("tool_calls", []):
            assert isinstance(d["function"]["arguments"], str)  # never null
            if d["index"] not in seen:
                assert set(d) == {"index", "id", "type", "function"}
                assert d["type"] == "function" and d["function"]["arguments"] == ""
                assert d["function"]["name"] == "get_weather"
                seen[d["index"]] = ""
            else:
                assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
                seen[d["index"]] += d["function"]["arguments"]
    assert sorted(seen) == list(range(len(seen)))  # each call its own index, in order
    for args in seen.values():
        assert isinstance(json.loads(args)["location"], str)


def test_no_usage_chunk_unless_asked(stack):
    events = _tool_stream(stack)
    assert events[-1] == "[DONE]"
    assert all(c["choices"] for c in events[:-1])


def test_tool_without_parameters_streams_empty_object(stack):
    events = post_stream(
        stack,
        {
            "model": stack.model,
            "stream": True,
            "temperature": 0,
            "messages": [{"role": "user", "content": "What time is it?"}],
            "tools": [NO_PARAMS],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
    )
    args = "".join(
        d["function"]["arguments"]
        for c in events[:-1]
        for d in c["choices"][0]["delta"].get("tool_calls", [])
    )
    assert args == "{}"


def _shape(chunks: list) -> list:
    """The delta keys of each tool-call chunk, in order, collapsed where repeated."""
    out = []
    for c in chunks:
        for ch in c["choices"]:
            keys = tuple(sorted(ch["delta"])) + (
                (ch["finish_reason"],) if ch["finish_reason"] else ()
            )
            for d in ch["delta"].get("tool_calls", []):
                keys += tuple(sorted(d)) + tuple(sorted(d["function"]))
            if not out or out[-1] != keys:
                out.append(keys)
    return out


@pytest.mark.skipif(not RECORDED.is_dir(), reason="recorded OpenAI streams not present")
def test_same_shape_as_recorded_openai_stream(stack):
    recorded = read_recorded(
        RECORDED / "f82268f2fefd5cfbc7eeb59c297688be2f6ca0849a6e4f17851b517310841d9b.bin"
    )
    ours = _tool_stream(stack)
    assert recorded[-1] == ours[-1] == "[DONE]"
    # Both: role chunk, then per call a first delta (index,id,type,function{name,arguments})
    # and argument deltas (index,function{arguments}), then the empty finishing delta.
    rec_shape, our_shape = _shape(recorded[:-1]), _shape(ours[:-1])
    assert our_shape[0] == rec_shape[0]
    assert our_shape[-1] == rec_shape[-1]
    assert set(our_shape[1:-1]) <= set(rec_shape[1:-1])
