"""The gateway's side of ExtractStream (gateway/extractor_mux.py), message by message: a step's
tokens for many requests leave as one columnar message, deltas fan out to their requests,
deltas a reader has not taken yet merge without reordering content and calls, and failures
end exactly their requests."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from toolwire.errors import PARAM_KEY
from toolwire.gateway.extractor_mux import ExtractStream
from toolwire.gateway.mux_stream import rpc_error as _rpc_error
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.plumbing.delta_merge import merge


def _stream() -> ExtractStream:
    s = ExtractStream(None, None)
    s.call = object()  # "connected": open() queues starts without a real call
    return s


def _call(index, id="", name="", arguments=""):
    return pb.ToolCallDelta(index=index, id=id, name=name, arguments=arguments)


def test_merge_keeps_the_order_of_content_and_calls():
    a = pb.ExtractResponse(content="Hel")
    assert merge(a, pb.ExtractResponse(content="lo "))
    assert merge(a, pb.ExtractResponse(tool_calls=[_call(0, "call_1", "f", "")]))
    assert merge(a, pb.ExtractResponse(tool_calls=[_call(0, arguments='{"a"')]))
    assert merge(a, pb.ExtractResponse(tool_calls=[_call(0, arguments=": 1}")]))
    assert a.content == "Hello " and len(a.tool_calls) == 1
    assert a.tool_calls[0].arguments == '{"a": 1}' and a.tool_calls[0].id == "call_1"
    assert not merge(a, pb.ExtractResponse(content="after the call"))  # stays after it
    r = pb.ExtractResponse(content="text")
    assert not merge(r, pb.ExtractResponse(reasoning_content="late thought"))
    assert merge(r, pb.ExtractResponse(finish_reason="stop"))
    assert not merge(r, pb.ExtractResponse(content="x"))  # nothing after the last


def test_one_message_per_step_and_deltas_fan_out():
    async def run():
        s = _stream()
        a = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-a")
        b = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-b")
        await a.tokens([1, 2])
        await b.tokens([3])
        await a.tokens([4])
        await b.end("length")
        msg = s._take()
        assert [st.handle for st in msg.starts] == [a.handle, b.handle]
        assert msg.starts[0].request_id == "req-a"
        assert list(msg.handles) == [a.handle, b.handle] and list(msg.counts) == [3, 1]
        assert list(msg.token_ids) == [1, 2, 4, 3]
        assert [(e.handle, e.finish_reason) for e in msg.ends] == [(b.handle, "length")]
        assert s._take() is None
        s._dispatch(
            pb.ExtractStreamFrame(
                handles=[a.handle, b.handle, a.handle],
                deltas=[
                    pb.ExtractResponse(content="x"),
                    pb.ExtractResponse(content="y", finish_reason="length"),
                    pb.ExtractResponse(content="z"),
                ],
            )
        )
        assert (await a.read()).content == "xz"  # unread deltas merged
        last = await b.read()
        assert last.content == "y" and last.finish_reason == "length"
        assert await b.read() is grpc.aio.EOF
        assert b.handle not in s.handles and a.handle in s.handles
        a.cancel()
        assert s._take().cancels == [a.handle]

    asyncio.run(run())


def test_a_failure_ends_its_request_and_a_broken_stream_all():
    async def run():
        s = _stream()
        a = await s.open(pb.ExtractSetup())
        b = await s.open(pb.ExtractSetup())
        c = await s.open(pb.ExtractSetup())
        s._dispatch(
            pb.ExtractStreamFrame(
                failures=[
                    pb.ExtractStreamFailure(
                        handle=a.handle,
                        status_code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                        details="unknown tool format",
                        metadata={PARAM_KEY: "tool_format"},
                    )
                ]
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await a.read()
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(e.value.trailing_metadata())[PARAM_KEY] == "tool_format"
        s._dispatch(pb.ExtractStreamFrame(handles=[b.handle], deltas=[pb.ExtractResponse()]))
        s._fail_all(_rpc_error(grpc.StatusCode.UNAVAILABLE, "gone"))
        await b.read()  # what came before the break is still read
        for h in (b, c):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await h.read()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(run())
