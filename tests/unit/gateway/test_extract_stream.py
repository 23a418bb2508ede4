"""The gateway's side of ExtractStream (gateway/extract_stream.py), message by message: the
starts and cancels of many requests leave as one message (and nothing else: tokens reach the
pod from decode), each request's route names the pod, the stream's session and its handle,
deltas fan out to their requests, deltas a reader has not taken yet merge without reordering
content and calls (toolwire/plumbing/delta_merge.py, usage included), and failures end exactly
their requests."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from toolwire.errors import PARAM_KEY
from toolwire.gateway.extract_stream import ExtractStream
from toolwire.gateway.stream_base import rpc_error
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2_grpc as pb_grpc
from toolwire.plumbing.delta_merge import merge
from toolwire.plumbing.grpc_server import GrpcServer
from toolwire.plumbing.request_context import SESSION_KEY
from toolwire.services.extractor.server import ExtractorServicer
from toolwire.stack.launcher import free_ports


def _stream(session: str = "s-1") -> ExtractStream:
    s = ExtractStream("10.0.0.9:50053", None, None)
    s.call = object()  # "connected": open() queues starts without a real call
    s.session = session
    return s


def _call(index, id="", name="", arguments=""):
    return pb.ToolCallDelta(index=index, id=id, name=name, arguments=arguments)


def test_merge_keeps_the_order_of_content_and_calls():
    a = pb.ExtractResponse(content="Hel")
    assert merge(a, pb.ExtractResponse(content="lo "))
    assert merge(a, pb.ExtractResponse(tool_calls=[_call(0, "call_1", "f", "")]))
    assert merge(a, pb.ExtractResponse(tool_calls=[_call(0, arguments='{"a"')]))
    assert merge(a, pb.ExtractResponse(tool_calls=[_call(0, arguments=": 1}")]))
    assert merge(a, pb.ExtractResponse(tool_calls=[_call(1, "call_2", "g", "{}")]))
    assert a.content == "Hello " and len(a.tool_calls) == 2
    assert a.tool_calls[0].arguments == '{"a": 1}' and a.tool_calls[0].id == "call_1"
    assert (a.tool_calls[1].id, a.tool_calls[1].arguments) == ("call_2", "{}")
    assert not merge(a, pb.ExtractResponse(content="after the call"))  # stays after it
    assert not merge(a, pb.ExtractResponse(reasoning_content="a thought after it"))
    r = pb.ExtractResponse(content="text")
    assert not merge(r, pb.ExtractResponse(reasoning_content="late thought"))
    t = pb.ExtractResponse(reasoning_content="think")
    assert merge(t, pb.ExtractResponse(reasoning_content=" more", content="then text"))
    assert (t.reasoning_content, t.content) == ("think more", "then text")
    assert merge(r, pb.ExtractResponse(finish_reason="stop"))
    assert not merge(r, pb.ExtractResponse(content="x"))  # nothing after the last


def test_merge_carries_the_last_deltas_finish_and_usage():
    usage = common.Usage(prompt_tokens=9, completion_tokens=4, total_tokens=13, cached_tokens=2)
    last = pb.ExtractResponse(content="a")
    assert merge(last, pb.ExtractResponse(content="b"))
    assert not last.HasField("usage")  # a delta that is not the last has none
    assert merge(
        last,
        pb.ExtractResponse(
            content="c",
            finish_reason="length",
            finish_reason_code=common.FINISH_REASON_LENGTH,
            usage=usage,
        ),
    )
    assert last.content == "abc" and last.finish_reason == "length"
    assert last.finish_reason_code == common.FINISH_REASON_LENGTH
    assert last.usage == usage


def test_starts_and_cancels_leave_as_one_message_and_routes_name_the_request():
    async def run():
        s = _stream("sess-abc")
        a = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-a")
        b = await s.open(pb.ExtractSetup(tool_format="qwen3_coder", stop=["END"]), "req-b")
        c = await s.open(pb.ExtractSetup(), "req-c")
        b.cancel()
        b.cancel()  # idempotent: one cancel
        msg = s._take()
        later = s._take()
        c.cancel()
        return s, a, b, c, msg, later, s._take()

    s, a, b, c, msg, later, cancel_c = asyncio.run(run())
    assert [st.handle for st in msg.starts] == [a.handle, b.handle, c.handle]
    assert [st.request_id for st in msg.starts] == ["req-a", "req-b", "req-c"]
    assert msg.starts[1].setup.tool_format == "qwen3_coder"
    assert list(msg.starts[1].setup.stop) == ["END"]
    assert list(msg.cancels) == [b.handle]
    # no tokens and no ends from the gateway: decode pushes them to the pod
    assert not (msg.handles or msg.counts or msg.token_ids or msg.ends)
    assert later is None
    assert list(cancel_c.cancels) == [c.handle] and not cancel_c.starts
    assert len({a.handle, b.handle, c.handle}) == 3
    for e in (a, b, c):
        assert (e.route.address, e.route.session, e.route.handle) == (
            "10.0.0.9:50053",
            "sess-abc",
            e.handle,
        )
    assert s.load == 1 and a.handle in s.entries


def test_deltas_fan_out_and_unread_ones_merge():
    async def run():
        s = _stream()
        a = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-a")
        b = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-b")
        assert len(s._take().starts) == 2
        usage = common.Usage(prompt_tokens=5, completion_tokens=1, total_tokens=6)
        s._dispatch(
            pb.ExtractStreamFrame(
                handles=[a.handle, b.handle, a.handle, 999],  # 999: no such request
                deltas=[
                    pb.ExtractResponse(content="x"),
                    pb.ExtractResponse(content="y", finish_reason="length", usage=usage),
                    pb.ExtractResponse(content="z"),
                    pb.ExtractResponse(content="nobody's"),
                ],
            )
        )
        s._dispatch(
            pb.ExtractStreamFrame(
                handles=[a.handle], deltas=[pb.ExtractResponse(tool_calls=[_call(0, "c1", "f")])]
            )
        )
        s._dispatch(
            pb.ExtractStreamFrame(handles=[a.handle], deltas=[pb.ExtractResponse(content="w")])
        )
        first = await a.read()  # unread deltas merged, in order: text, then the call
        second = await a.read()  # text after a call stays a delta of its own
        last = await b.read()
        after = await b.read()
        waiting = asyncio.create_task(a.read())
        await asyncio.sleep(0)
        assert not waiting.done()
        s._dispatch(
            pb.ExtractStreamFrame(
                handles=[a.handle], deltas=[pb.ExtractResponse(finish_reason="stop")]
            )
        )
        woken = await asyncio.wait_for(waiting, 1)
        return s, a, b, first, second, last, after, woken, await a.read()

    s, a, b, first, second, last, after, woken, eof = asyncio.run(run())
    assert first.content == "xz" and [c.id for c in first.tool_calls] == ["c1"]
    assert second.content == "w" and not second.tool_calls
    assert (last.content, last.finish_reason, last.usage.prompt_tokens) == ("y", "length", 5)
    assert after is grpc.aio.EOF
    assert woken.finish_reason == "stop" and eof is grpc.aio.EOF
    assert not s.entries  # both finished: nothing to cancel
    a.cancel()
    assert s._take() is None


def test_a_failure_ends_its_request_and_a_broken_stream_all():
    async def run():
        s = _stream()
        a = await s.open(pb.ExtractSetup())
        b = await s.open(pb.ExtractSetup())
        c = await s.open(pb.ExtractSetup())
        assert len(s._take().starts) == 3
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
        assert set(s.entries) == {b.handle, c.handle} and not (b.ended or c.ended)
        s._dispatch(
            pb.ExtractStreamFrame(handles=[b.handle], deltas=[pb.ExtractResponse(content="t")])
        )
        s._fail_all(rpc_error(grpc.StatusCode.UNAVAILABLE, "gone"))
        assert (await b.read()).content == "t"  # what came before the break is still read
        for h in (b, c):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await h.read()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        return s

    s = asyncio.run(run())
    assert not s.entries and s._take() is None  # a failed request needs no cancel


async def _extractor(tokenizer):
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    servicer = ExtractorServicer(tokenizer, "hermes")
    server = GrpcServer(address)
    server.add(pb_grpc.add_ExtractorServiceServicer_to_server, servicer, pb.DESCRIPTOR)
    await server.start()
    return address, servicer, server


async def _until(cond, timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)


def test_over_the_wire_the_route_names_the_session_the_stream_registered(tokenizer):
    """A real extractor on loopback: the session in each route is the one the stream's
    metadata named on the pod (`toolwire-session`); the pod forgets it when the stream ends,
    and the stream opened after that has a new one."""

    async def run():
        address, servicer, server = await _extractor(tokenizer)
        ch = grpc.aio.insecure_channel(address)
        s = ExtractStream(address, pb_grpc.ExtractorServiceStub(ch), (("x-request-id", "r"),))
        try:
            a = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-a")
            b = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-b")
            await _until(lambda: servicer.sessions)
            registered = set(servicer.sessions)
            first = s.session
            await s.close()
            await _until(lambda: not servicer.sessions)
            gone = set(servicer.sessions)
            c = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-c")
            await _until(lambda: servicer.sessions)
            return a, b, c, registered, first, gone, set(servicer.sessions)
        finally:
            await s.close()
            await ch.close()
            await server.stop(0)

    a, b, c, registered, first, gone, now = asyncio.run(run())
    assert first and registered == {first} and SESSION_KEY == "toolwire-session"
    for e in (a, b):
        assert (e.route.address, e.route.session, e.route.handle) == (
            a.route.address,
            first,
            e.handle,
        )
    assert a.route.address.startswith("127.0.0.1:") and a.handle != b.handle
    assert gone == set()  # the pod forgets a session whose stream ended
    assert now == {c.route.session} and c.route.session != first


def test_the_session_is_registered_on_the_pod_before_the_first_open_returns(tokenizer):
    """The route goes to decode as soon as open() returns, and decode may push at once: on
    each of ten new streams, the pod knows the session by then."""

    async def run():
        address, servicer, server = await _extractor(tokenizer)
        ch = grpc.aio.insecure_channel(address)
        known = []
        try:
            for _ in range(10):
                s = ExtractStream(address, pb_grpc.ExtractorServiceStub(ch), ())
                a = await s.open(pb.ExtractSetup(tool_format="hermes"), "req-a")
                known.append(a.route.session in servicer.sessions)  # nothing awaited since
                await s.close()
        finally:
            await ch.close()
            await server.stop(0)
        return known

    assert asyncio.run(run()) == [True] * 10
