"""The gateway's side of GenerateStream (gateway/decode_mux.py), frame by frame: columnar
frames fan out to their requests, tokens a reader has not taken yet merge into one read,
finishes and failures end exactly their requests, and a broken stream fails all of them."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from toolwire.errors import CODE_KEY
from toolwire.gateway.decode_mux import DecodeStream
from toolwire.gateway.mux_stream import rpc_error as _rpc_error
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb


class _Stub:
    """Stands in for the channel: the frames here are fed by the test, not read off a call."""

    def GenerateStream(self, metadata=None):
        return None


def _stream() -> DecodeStream:
    s = DecodeStream(_Stub(), None)
    s.call = object()  # "connected": open() sends starts without a real call
    return s


def test_frames_fan_out_and_unread_tokens_merge():
    async def run():
        s = _stream()
        a = s.open(pb.GenerateRequest(request_id="a"))
        b = s.open(pb.GenerateRequest(request_id="b"))
        assert [m.start.handle for m in s.outbox] == [a.handle, b.handle]
        s._dispatch(
            pb.StreamFrame(handles=[a.handle, b.handle], counts=[2, 1], token_ids=[5, 6, 7])
        )
        s._dispatch(pb.StreamFrame(handles=[a.handle], counts=[1], token_ids=[8]))
        assert await a.read() == [5, 6, 8]  # two frames, one read
        assert await b.read() == [7]
        done = pb.GenerateComplete(finish_reason="length", completion_tokens=3)
        s._dispatch(
            pb.StreamFrame(
                handles=[b.handle],
                counts=[1],
                token_ids=[9],
                finishes=[pb.StreamFinish(handle=b.handle, complete=done)],
                failures=[
                    pb.StreamFailure(
                        handle=a.handle,
                        status_code=grpc.StatusCode.UNAVAILABLE.value[0],
                        details="no decode slot came free in time",
                        metadata={CODE_KEY: "queue_timeout"},
                    )
                ],
            )
        )
        assert await b.read() == [9]
        assert await b.read() == done
        assert await b.read() is grpc.aio.EOF
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await a.read()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(e.value.trailing_metadata())[CODE_KEY] == "queue_timeout"
        assert not s.handles

    asyncio.run(run())


def test_a_waiting_reader_wakes_and_cancel_sends_a_cancel():
    async def run():
        s = _stream()
        a = s.open(pb.GenerateRequest(request_id="a"))
        reader = asyncio.create_task(a.read())
        await asyncio.sleep(0)
        s._dispatch(pb.StreamFrame(handles=[a.handle], counts=[1], token_ids=[3]))
        assert await asyncio.wait_for(reader, 1) == [3]
        a.cancel()
        assert s.outbox[-1].cancel.handle == a.handle and not s.handles
        a.cancel()  # idempotent: one cancel sent
        assert sum(m.HasField("cancel") for m in s.outbox) == 1

    asyncio.run(run())


def test_a_broken_stream_fails_every_request_on_it():
    async def run():
        s = _stream()
        handles = [s.open(pb.GenerateRequest(request_id=str(i))) for i in range(3)]
        s._fail_all(_rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset"))
        for h in handles:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await h.read()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert CODE_KEY not in dict(e.value.trailing_metadata())  # -> retried elsewhere

    asyncio.run(run())
