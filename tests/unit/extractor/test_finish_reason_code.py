"""The extractor's last response carries its finish reason twice: the string and, beside it,
the FinishReason enum (finish_reason_code), written together (toolwire/wire_enums.py)."""

from __future__ import annotations

import pytest

from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.services.extractor.extraction import Extraction
from toolwire.vocabulary import FinishReason
from toolwire.wire_enums import finish_from_proto, finish_to_proto

TOOLS = pb.ExtractSetup(
    tool_format="hermes",
    tools=[{"name": "get_weather", "parameters_json": '{"type": "object"}'}],
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>'


def test_conversions_round_trip():
    for reason in (FinishReason.STOP, FinishReason.LENGTH, FinishReason.ABORT):
        assert finish_from_proto(finish_to_proto(reason)) is reason
    assert finish_to_proto("tool_calls") == common.FINISH_REASON_TOOL_CALLS  # a proto's string
    assert finish_to_proto(FinishReason.CONTENT_FILTER) == common.FINISH_REASON_UNSPECIFIED
    assert finish_to_proto("") == finish_to_proto(None) == common.FINISH_REASON_UNSPECIFIED
    assert finish_from_proto(common.FINISH_REASON_UNSPECIFIED) is None
    assert finish_from_proto(99) is None  # a newer peer's value


@pytest.mark.parametrize(
    "setup,text,decode,want",
    [
        (pb.ExtractSetup(tool_format="hermes"), "hello", "stop", FinishReason.STOP),
        (pb.ExtractSetup(tool_format="hermes"), "hello", "length", FinishReason.LENGTH),
        (TOOLS, CALL, "stop", FinishReason.TOOL_CALLS),
        (pb.ExtractSetup(tool_format="hermes", stop=["ll"]), "hello", "length", "stop"),
    ],
)
def test_the_last_response_sets_both(tokenizer, setup, text, decode, want):
    state = Extraction(setup, tokenizer, "hermes")
    last = state.tokens(tokenizer.encode(text, add_special_tokens=False))
    if not state.done:
        last = state.end(decode)
    assert last.finish_reason == want
    assert last.finish_reason_code == finish_to_proto(want) != common.FINISH_REASON_UNSPECIFIED


def test_a_merged_last_delta_keeps_the_enum(tokenizer):
    """On the multiplexed stream the last response merges into a delta not yet sent: the
    merged delta carries the enum as well as the string."""
    from toolwire.services.extractor.extract_stream import ServedExtractStream
    from toolwire.services.extractor.server import ExtractorServicer

    mux = ServedExtractStream(ExtractorServicer(tokenizer, "hermes"))
    setup = pb.ExtractSetup(tool_format="hermes", stop=["zzz"])  # not plain: responses merge
    ids = tokenizer.encode("hello there", add_special_tokens=False)
    mux.handle(
        pb.ExtractStreamRequest(
            starts=[pb.ExtractStreamStart(handle=1, setup=setup)],
            handles=[1],
            counts=[len(ids)],
            token_ids=ids,
            ends=[pb.ExtractStreamEnd(handle=1, finish_reason="length")],
        )
    )
    frame = mux.take()
    assert list(frame.handles) == [1]  # one delta: the text and the end merged
    assert frame.deltas[0].finish_reason == "length"
    assert frame.deltas[0].finish_reason_code == common.FINISH_REASON_LENGTH
