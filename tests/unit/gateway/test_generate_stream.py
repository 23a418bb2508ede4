"""The gateway's side of GenerateStream (gateway/generate_stream.py), frame by frame: a start
carries its request's route to the extractor, `started` wakes exactly its requests'
`started()`, finishes and failures end exactly their requests, a failure after the start goes
to `on_fail`, a cancel sends one StreamCancel, and a stream that breaks fails every request on
it with an error the run retries elsewhere (UNAVAILABLE, no toolwire-code)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from toolwire.errors import CODE_KEY, from_rpc_error
from toolwire.gateway.generate_stream import GenerateStream
from toolwire.gateway.stream_base import rpc_error
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.grpc_gen.decode.v1 import decode_pb2_grpc
from toolwire.plumbing.grpc_server import GrpcServer
from toolwire.stack.launcher import free_ports


class _Stub:
    """Stands in for the channel: the frames here are fed by the test, not read off a call."""

    def GenerateStream(self, metadata=None):
        raise AssertionError("a connected stream opens no call")


def _stream() -> GenerateStream:
    s = GenerateStream(_Stub(), None)
    s.call = object()  # "connected": open() sends starts without a real call
    return s


def _route(handle: int, session: str = "sess-1") -> pb.ExtractRoute:
    return pb.ExtractRoute(address="10.0.0.7:50053", session=session, handle=handle)


def _failure(handle: int, code: grpc.StatusCode, details: str, **md) -> pb.StreamFailure:
    return pb.StreamFailure(handle=handle, status_code=code.value[0], details=details, metadata=md)


async def _pending(task: asyncio.Task) -> bool:
    """Whether `task` is still waiting after the loop has run everything ready."""
    for _ in range(3):
        await asyncio.sleep(0)
    return not task.done()


def test_a_start_carries_its_route_and_interval():
    async def run():
        s = _stream()
        a = s.open(pb.GenerateRequest(request_id="a"), _route(4), (8, 30))
        b = s.open(pb.GenerateRequest(request_id="b"), _route(5, "sess-2"))
        c = s.open(pb.GenerateRequest(request_id="c"), _route(6), (1, 0))
        return s, a, b, c

    s, a, b, c = asyncio.run(run())
    starts = [m.start for m in s.outbox]
    assert [st.handle for st in starts] == [a.handle, b.handle, c.handle]
    assert len({a.handle, b.handle, c.handle}) == 3
    assert [st.request.request_id for st in starts] == ["a", "b", "c"]
    assert [(st.route.address, st.route.session, st.route.handle) for st in starts] == [
        ("10.0.0.7:50053", "sess-1", 4),
        ("10.0.0.7:50053", "sess-2", 5),
        ("10.0.0.7:50053", "sess-1", 6),
    ]
    assert all(st.HasField("route") for st in starts)
    assert (starts[0].interval_tokens, starts[0].interval_ms) == (8, 30)
    assert (starts[1].interval_tokens, starts[1].interval_ms) == (0, 0)
    assert starts[2].interval_tokens == 0  # one token: nothing held
    assert set(s.entries) == {a.handle, b.handle, c.handle} and s.load == 3


def test_started_wakes_exactly_its_requests():
    async def run():
        s = _stream()
        a = s.open(pb.GenerateRequest(request_id="a"), _route(1))
        b = s.open(pb.GenerateRequest(request_id="b"), _route(2))
        wait_a = asyncio.create_task(a.started())
        wait_b = asyncio.create_task(b.started())
        assert await _pending(wait_a) and await _pending(wait_b)
        s._dispatch(pb.StreamFrame(started=[a.handle, 999]))  # 999: no such request
        await asyncio.wait_for(wait_a, 1)
        assert await _pending(wait_b)  # b has produced nothing yet
        assert a.handle in s.entries  # started is no finish: a still runs
        await a.started()  # returns at once from now on
        s._dispatch(pb.StreamFrame(started=[b.handle]))
        await asyncio.wait_for(wait_b, 1)
        return s

    s = asyncio.run(run())
    assert s.load == 2


def test_finishes_and_failures_end_exactly_their_requests():
    async def run():
        s = _stream()
        a, b, c, d = (
            s.open(pb.GenerateRequest(request_id=n), _route(i)) for i, n in enumerate("abcd")
        )
        s._dispatch(pb.StreamFrame(started=[c.handle, d.handle]))
        await c.started()
        await d.started()
        heard: list[BaseException] = []
        c.on_fail = d.on_fail = heard.append
        done = pb.GenerateComplete(finish_reason="length", completion_tokens=3)
        s._dispatch(
            pb.StreamFrame(
                finishes=[pb.StreamFinish(handle=b.handle, complete=done)],
                failures=[
                    _failure(
                        a.handle,
                        grpc.StatusCode.UNAVAILABLE,
                        "no decode slot came free in time",
                        **{CODE_KEY: "queue_timeout"},
                    ),
                    _failure(d.handle, grpc.StatusCode.INTERNAL, "engine fault"),
                ],
            )
        )
        # b finished before any token (aborted while queued): it counts as started
        await b.started()
        assert b.complete == done and b.ended
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await a.started()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert dict(e.value.trailing_metadata())[CODE_KEY] == "queue_timeout"
        assert e.value.details() == "no decode slot came free in time"
        assert [e.code() for e in heard] == [grpc.StatusCode.INTERNAL] and d.error is heard[0]
        # c is untouched: still open, not ended, not failed
        assert list(s.entries) == [c.handle] and not c.ended and c.error is None
        return a

    a = asyncio.run(run())
    assert from_rpc_error(a.error, "decode").status == 503


def test_a_failure_after_the_start_goes_to_on_fail_once():
    async def run():
        s = _stream()
        a = s.open(pb.GenerateRequest(request_id="a"), _route(1))
        b = s.open(pb.GenerateRequest(request_id="b"), _route(2))
        heard: dict[str, list[BaseException]] = {"a": [], "b": []}
        s._dispatch(pb.StreamFrame(started=[a.handle, b.handle]))
        await a.started()
        await b.started()
        a.on_fail = heard["a"].append
        b.on_fail = heard["b"].append
        s._dispatch(
            pb.StreamFrame(failures=[_failure(a.handle, grpc.StatusCode.INTERNAL, "engine fault")])
        )
        # a failure for a request already gone is not heard again
        s._dispatch(
            pb.StreamFrame(failures=[_failure(a.handle, grpc.StatusCode.INTERNAL, "again")])
        )
        s._dispatch(
            pb.StreamFrame(
                finishes=[pb.StreamFinish(handle=b.handle, complete=pb.GenerateComplete())]
            )
        )
        return s, heard

    s, heard = asyncio.run(run())
    assert [e.code() for e in heard["a"]] == [grpc.StatusCode.INTERNAL]
    assert heard["a"][0].details() == "engine fault"
    assert heard["b"] == []  # a finish is no failure
    assert not s.entries


def test_cancel_sends_one_stream_cancel():
    async def run():
        s = _stream()
        a = s.open(pb.GenerateRequest(request_id="a"), _route(1))
        b = s.open(pb.GenerateRequest(request_id="b"), _route(2))
        waiting = asyncio.create_task(a.started())
        assert await _pending(waiting)
        a.cancel()
        a.cancel()  # idempotent
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # a finished request needs no cancel
        s._dispatch(
            pb.StreamFrame(
                finishes=[pb.StreamFinish(handle=b.handle, complete=pb.GenerateComplete())]
            )
        )
        b.cancel()
        return s, a

    s, a = asyncio.run(run())
    cancels = [m.cancel.handle for m in s.outbox if m.HasField("cancel")]
    assert cancels == [a.handle]
    assert s.outbox[-1].HasField("cancel") and not s.entries


def test_a_broken_stream_fails_every_request_and_the_run_retries_elsewhere():
    async def run():
        s = _stream()
        entries = [s.open(pb.GenerateRequest(request_id=str(i)), _route(i)) for i in range(3)]
        heard: list[BaseException] = []
        s._dispatch(pb.StreamFrame(started=[entries[0].handle]))
        await entries[0].started()
        entries[0].on_fail = heard.append
        s._fail_all(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset"))
        errors = []
        for e in entries[1:]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await e.started()
            errors.append(raised.value)
        return s, heard, errors

    s, heard, errors = asyncio.run(run())
    assert not s.entries and s.load == 0
    assert len(heard) == 1 and heard[0].code() == grpc.StatusCode.UNAVAILABLE
    for e in errors:
        # what Run._start takes for "the replica is unreachable": mark it down, try another
        assert e.code() == grpc.StatusCode.UNAVAILABLE
        assert CODE_KEY not in dict(e.trailing_metadata() or ())


def test_a_failure_in_the_frame_that_started_it_is_not_lost():
    async def run():
        s = _stream()
        a = s.open(pb.GenerateRequest(request_id="a"), _route(1))
        s._dispatch(
            pb.StreamFrame(
                started=[a.handle],
                failures=[_failure(a.handle, grpc.StatusCode.INTERNAL, "engine fault")],
            )
        )
        heard: list[BaseException] = []
        try:
            await a.started()
        except grpc.aio.AioRpcError as e:
            heard.append(e)
        else:  # what Run._start does next: from now on on_fail hears of a failure
            a.on_fail = heard.append
        return heard

    heard = asyncio.run(run())
    assert [e.code() for e in heard] == [grpc.StatusCode.INTERNAL]


class _Replica(decode_pb2_grpc.DecodeServiceServicer):
    """A decode replica on loopback that says `started` for each start (but those of requests
    named "held") and ends the stream when it reads a cancel: the wire side of a replica
    whose stream ends under its requests (the frames and the end are real gRPC)."""

    def __init__(self):
        self.seen: list[pb.StreamRequest] = []
        self.metadata: dict = {}

    async def GenerateStream(self, request_iterator, context):
        self.metadata = dict(context.invocation_metadata())
        async for msg in request_iterator:
            self.seen.append(msg)
            if msg.HasField("cancel"):
                return
            if msg.start.request.request_id != "held":
                yield pb.StreamFrame(started=[msg.start.handle])


async def _serve(replica: _Replica) -> tuple[GrpcServer, grpc.aio.Channel]:
    (port,) = free_ports(1)
    server = GrpcServer(f"127.0.0.1:{port}")
    server.add(decode_pb2_grpc.add_DecodeServiceServicer_to_server, replica, pb.DESCRIPTOR)
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def test_over_the_wire_a_start_carries_the_route_and_an_ended_stream_fails_all():
    async def run():
        replica = _Replica()
        server, ch = await _serve(replica)
        s = GenerateStream(decode_pb2_grpc.DecodeServiceStub(ch), (("x-request-id", "r1"),))
        try:
            a = s.open(pb.GenerateRequest(request_id="a"), _route(11), (4, 20))
            b = s.open(pb.GenerateRequest(request_id="b"), _route(12))
            held = s.open(pb.GenerateRequest(request_id="held"), _route(13))
            await asyncio.wait_for(a.started(), 5)
            await asyncio.wait_for(b.started(), 5)
            first_call = s.call
            heard: dict[str, list[BaseException]] = {"a": [], "b": []}
            a.on_fail, b.on_fail = heard["a"].append, heard["b"].append
            a.cancel()  # the replica ends the stream when it reads it; nothing else is written
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await asyncio.wait_for(held.started(), 5)
            # the next request opens a new stream
            d = s.open(pb.GenerateRequest(request_id="d"), _route(14))
            await asyncio.wait_for(d.started(), 5)
            return replica, e.value, heard, first_call, s.call, a, b, s
        finally:
            await s.close()
            await ch.close()
            await server.stop(0)

    replica, error, heard, first_call, second_call, a, b, s = asyncio.run(run())
    starts = [m.start for m in replica.seen if m.HasField("start")]
    assert [st.request.request_id for st in starts] == ["a", "b", "held", "d"]
    assert [st.route for st in starts] == [_route(11), _route(12), _route(13), _route(14)]
    assert (starts[0].interval_tokens, starts[0].interval_ms) == (4, 20)
    assert [m.cancel.handle for m in replica.seen if m.HasField("cancel")] == [a.handle]
    assert replica.metadata.get("x-request-id") == "r1"
    # UNAVAILABLE without a toolwire-code: Run._start marks the replica down and tries another
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert CODE_KEY not in dict(error.trailing_metadata() or ())
    # b had started: its failure went to on_fail; a was cancelled first and hears nothing
    assert [e.code() for e in heard["b"]] == [grpc.StatusCode.UNAVAILABLE]
    assert heard["a"] == [] and a.error is None
    assert first_call is not second_call and first_call is not None


def test_a_start_written_as_the_stream_ends_still_fails_as_unavailable():
    """Sixty streams, each ended by the replica while the gateway writes a start on it: each
    request left on it must fail as the stream's end (UNAVAILABLE, retried elsewhere)."""

    async def run():
        replica = _Replica()
        server, ch = await _serve(replica)
        codes = []
        try:
            for _ in range(60):
                s = GenerateStream(decode_pb2_grpc.DecodeServiceStub(ch), None)
                a = s.open(pb.GenerateRequest(request_id="a"), _route(1))
                await asyncio.wait_for(a.started(), 5)
                a.cancel()  # the replica ends the stream on reading this...
                late = s.open(pb.GenerateRequest(request_id="late"), _route(2))  # ...as this goes
                try:
                    await asyncio.wait_for(late.started(), 5)
                except grpc.aio.AioRpcError as e:
                    codes.append((e.code(), CODE_KEY in dict(e.trailing_metadata() or ())))
                await s.close()
        finally:
            await ch.close()
            await server.stop(0)
        return codes

    codes = asyncio.run(run())
    assert len(codes) == 60
    assert set(codes) == {(grpc.StatusCode.UNAVAILABLE, False)}
