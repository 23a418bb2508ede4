"""The extractor's multiplexed stream on plain-text requests (no tools, no stop strings), whose
deltas it keeps as bare text until a frame is built (services/extractor/extract_stream.py): each frame's
delta is byte for byte the response the per-request path (`Extraction.tokens`) gives for the
same chunk, text that waited for a frame merges, and the last delta carries the rest with the
finish reason, as before; a request with tools on the same stream keeps its responses."""

from __future__ import annotations

import random

from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.services.extractor.extract_stream import ServedExtractStream
from toolwire.services.extractor.extraction import Extraction
from toolwire.services.extractor.server import ExtractorServicer

TEXT = "Thé café ☕ costs 3€; 你好, 🙂 fine. The quick brown fox jumps over the lazy dog."
TOOLS = pb.ExtractSetup(
    tool_format="hermes",
    tools=[{"name": "get_weather", "parameters_json": '{"type": "object"}'}],
)


def _message(chunks: dict[int, list[int]], starts=(), ends=()) -> pb.ExtractStreamRequest:
    return pb.ExtractStreamRequest(
        starts=list(starts),
        handles=list(chunks),
        counts=[len(c) for c in chunks.values()],
        token_ids=[t for c in chunks.values() for t in c],
        ends=list(ends),
    )


def _chunks(ids: list[int], rng: random.Random) -> list[list[int]]:
    out, i = [], 0
    while i < len(ids):
        n = rng.choice([1, 1, 1, 2, 3])
        out.append(ids[i : i + n])
        i += n
    return out


def test_plain_deltas_are_the_per_request_responses(tokenizer):
    servicer = ExtractorServicer(tokenizer, "hermes")
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    rng = random.Random(3)
    mux = ServedExtractStream(servicer)
    plain, tools = pb.ExtractSetup(tool_format="hermes"), TOOLS
    mux.handle(
        _message(
            {},
            starts=[
                pb.ExtractStreamStart(handle=1, setup=plain),
                pb.ExtractStreamStart(handle=2, setup=tools),
            ],
        )
    )
    assert mux.states[1].plain and not mux.states[2].plain
    twins = {1: Extraction(plain, tokenizer, "hermes"), 2: Extraction(tools, tokenizer, "hermes")}
    chunks = _chunks(ids, rng)
    for chunk in chunks:
        mux.handle(_message({1: chunk, 2: chunk}))
        frame = mux.take()
        want = {h: twins[h].tokens(chunk) for h in twins}
        got = dict(zip(frame.handles, frame.deltas)) if frame is not None else {}
        for h in twins:
            if want[h] is None:
                assert h not in got
            else:
                assert got[h].SerializeToString() == want[h].SerializeToString()
    mux.handle(_message({}, ends=[pb.ExtractStreamEnd(handle=1, finish_reason="length")]))
    last = mux.take()
    assert list(last.handles) == [1]
    want = twins[1].end("length")
    assert last.deltas[0].SerializeToString() == want.SerializeToString()
    assert 1 not in mux.states


def test_plain_text_that_waits_for_a_frame_merges(tokenizer):
    servicer = ExtractorServicer(tokenizer, "hermes")
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    mux = ServedExtractStream(servicer)
    start = pb.ExtractStreamStart(handle=7, setup=pb.ExtractSetup(tool_format="hermes"))
    mux.handle(_message({7: ids[:5]}, starts=[start]))
    mux.handle(_message({7: ids[5:-3]}))
    mux.handle(_message({7: ids[-3:]}, ends=[pb.ExtractStreamEnd(handle=7, finish_reason="stop")]))
    frame = mux.take()
    assert list(frame.handles) == [7]  # one delta: the text, then the finish, merged
    assert frame.deltas[0].content == tokenizer.decode(ids)
    assert frame.deltas[0].finish_reason == "stop"
    assert mux.take() is None
