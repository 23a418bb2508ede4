"""The SSE fast path writes the same bytes as proto -> dict -> orjson for every chunk shape."""

from __future__ import annotations

import orjson

from toolwire.gateway.wire import chunk_dict, chunk_sse
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common


def _chunk(delta=None, finish=None, usage=None, model='m"odel é'):
    c = chat_pb2.ChatCompletionChunk(
        id="chatcmpl-abc", object="chat.completion.chunk", created=1796093612, model=model
    )
    if usage is not None:
        c.usage.CopyFrom(usage)
    else:
        choice = chat_pb2.ChunkChoice(index=0, delta=delta or chat_pb2.Delta())
        if finish:
            choice.finish_reason = finish
        c.choices.append(choice)
    return c


def test_every_chunk_shape_gives_the_general_paths_bytes():
    chunks = [
        _chunk(chat_pb2.Delta(content=' Thé "café" ☕\n\u2028')),
        _chunk(chat_pb2.Delta(content="")),
        _chunk(chat_pb2.Delta(role="assistant")),
        _chunk(chat_pb2.Delta(content="a", reasoning_content="b")),
        _chunk(chat_pb2.Delta(reasoning_content="why")),
        _chunk(
            chat_pb2.Delta(
                tool_calls=[chat_pb2.ToolCallChunk(index=0, id="c", name="f", arguments="")]
            )
        ),
        _chunk(finish="stop"),
        _chunk(usage=common.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)),
    ]
    for c in chunks:
        out = chunk_sse(c)
        assert out == b"data: " + orjson.dumps(chunk_dict(c)) + b"\n\n", c
        assert orjson.loads(out[6:]) == chunk_dict(c)
