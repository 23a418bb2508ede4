"""The decode replica's side of routed requests, without a network: PushTokensStream's pending
message (services/decode/push_tokens.py) groups a step's tokens by gateway session, columnar,
and takes tokens not sent yet into the same message; ends carry the finish enum and decode's
usage; a link that breaks tells each request on it once. And ServedGenerateStream's routed sink
(services/decode/generate_stream.py): the tokens go to the link, not the gateway's frame; the
frame names the request in `started` once; the finish goes to both (the link's end and the
frame's StreamFinish)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc

from toolwire.errors import CODE_KEY
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.plumbing.internal_security import ClientSecurity
from toolwire.services.decode.engine import EngineOutput, EngineRequestError
from toolwire.services.decode.generate_stream import ServedGenerateStream, _Sink
from toolwire.services.decode.push_tokens import PushTokensStream, PushTokensStreams
from toolwire.vocabulary import FinishReason

ADDRESS = "10.1.2.3:50053"


def _link(address: str = ADDRESS) -> PushTokensStream:
    link = PushTokensStream(address, ClientSecurity())
    link.call = object()  # "connected": attach() opens no call
    return link


def _sessions(push) -> dict[str, tuple[list[int], list[int], list[int], list]]:
    return {
        s.session: (
            list(s.handles),
            list(s.counts),
            list(s.token_ids),
            [(e.handle, e.finish_reason, e.usage) for e in s.ends],
        )
        for s in push.sessions
    }


def _usage(prompt: int, completion: int, cached: int = 0) -> common.Usage:
    return common.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
    )


def test_take_groups_by_session_columnar_and_merges_what_is_not_sent():
    async def run():
        link = _link()
        assert link.take() is None and not link.has_mail.is_set()
        link.put_tokens("s1", 1, [10, 11])
        assert link.has_mail.is_set()
        link.put_tokens("s2", 4, [40])
        link.put_tokens("s1", 2, [20])
        link.put_tokens("s1", 1, [12])  # the next step, before the writer took the message
        link.put_end("s1", 2, FinishReason.STOP, _usage(7, 1))
        link.put_end("s3", 9, "length", _usage(3, 16, cached=2))  # a session with ends only
        first = link.take()
        link.put_tokens("s2", 4, [41, 42])
        return first, link.take(), link.take()

    first, second, third = asyncio.run(run())
    assert sorted(s.session for s in first.sessions) == ["s1", "s2", "s3"]  # one entry each
    assert _sessions(first) == {
        "s1": ([1, 2], [3, 1], [10, 11, 12, 20], [(2, common.FINISH_REASON_STOP, _usage(7, 1))]),
        "s2": ([4], [1], [40], []),
        "s3": ([], [], [], [(9, common.FINISH_REASON_LENGTH, _usage(3, 16, cached=2))]),
    }
    assert _sessions(second) == {"s2": ([4], [2], [41, 42], [])}  # taken: nothing twice
    assert third is None


def test_ends_carry_every_finish_as_its_enum():
    async def run():
        link = _link()
        for handle, reason in enumerate(
            [FinishReason.STOP, FinishReason.LENGTH, FinishReason.ABORT, "stop"], start=1
        ):
            link.put_end("s", handle, reason, _usage(1, handle))
        return link.take()

    (entry,) = asyncio.run(run()).sessions
    assert [(e.handle, e.finish_reason, e.usage.completion_tokens) for e in entry.ends] == [
        (1, common.FINISH_REASON_STOP, 1),
        (2, common.FINISH_REASON_LENGTH, 2),
        (3, common.FINISH_REASON_ABORT, 3),
        (4, common.FINISH_REASON_STOP, 4),
    ]


def test_a_broken_link_tells_each_attached_request_once_and_detaches_them():
    async def run():
        link = _link()
        heard: dict[str, list[str]] = {"a": [], "b": [], "c": []}
        keys = {n: link.attach(heard[n].append) for n in heard}
        assert len(set(keys.values())) == 3
        link.detach(keys["c"])  # c finished before the break
        call = link.call
        link._broken(object(), "an older call's end")  # not this link's call: nothing
        assert link.call is call and all(not v for v in heard.values())
        link._broken(call, "the extractor ended the token stream")
        link._broken(call, "again")  # the same end seen twice (the writer and the callback)
        return link, heard

    link, heard = asyncio.run(run())
    assert heard["a"] == [f"the extractor ended the token stream ({ADDRESS})"]
    assert heard["b"] == heard["a"] and heard["c"] == []
    assert link.call is None and not link.routed


def test_links_are_one_per_extractor_address():
    links = PushTokensStreams()
    a = links.get("x:1")
    assert links.get("x:1") is a and links.get("x:2") is not a
    assert set(links.links) == {"x:1", "x:2"} and a.address == "x:1"


def _routed(mux: ServedGenerateStream, handle: int, link: PushTokensStream, **kw) -> _Sink:
    sink = _Sink(mux, handle, **kw)
    sink.route(link, "sess", 100 + handle, f"req-{handle}")
    mux.live[handle] = f"req-{handle}"
    return sink


def test_routed_tokens_go_to_the_link_and_the_frame_says_started_once():
    async def run():
        mux = ServedGenerateStream(engine=None, max_queue=0)
        link = _link()
        a, b = _routed(mux, 1, link), _routed(mux, 2, link)
        plain = _Sink(mux, 3)  # started without a route: its tokens go in the frame
        mux.live[3] = "req-3"
        a.put_nowait(EngineOutput([5, 6]))
        b.put_nowait(EngineOutput([7]))
        plain.put_nowait(EngineOutput([8]))
        first = mux.take()
        pushed = link.take()
        a.put_nowait(EngineOutput([9]))
        a.put_nowait(EngineOutput([10]))
        second = mux.take()
        return first, pushed, second, link.take(), link

    first, pushed, second, pushed_again, link = asyncio.run(run())
    assert list(first.started) == [1, 2]
    assert list(first.handles) == [3] and list(first.token_ids) == [8]  # only the plain one's
    assert _sessions(pushed) == {"sess": ([101, 102], [2, 1], [5, 6, 7], [])}
    assert second is None  # later tokens cost the gateway's stream nothing
    assert _sessions(pushed_again) == {"sess": ([101], [2], [9, 10], [])}
    assert len(link.routed) == 2


def test_a_routed_finish_goes_to_the_link_and_to_the_frame():
    async def run():
        mux = ServedGenerateStream(engine=None, max_queue=0)
        link = _link()
        a = _routed(mux, 1, link)
        a.put_nowait(EngineOutput([5]))
        mux.take()
        link.take()
        a.put_nowait(EngineOutput([6], FinishReason.LENGTH, 4, 2, cached_tokens=1))
        # a request that ended before its first token (aborted while queued)
        q = _routed(mux, 2, link)
        q.put_nowait(EngineOutput([], FinishReason.ABORT, 4, 0))
        return mux.take(), link.take(), mux, link

    frame, pushed, mux, link = asyncio.run(run())
    assert not frame.handles and not frame.token_ids
    assert list(frame.started) == []  # q produced nothing; a was named before
    assert [(f.handle, f.complete.finish_reason) for f in frame.finishes] == [
        (1, "length"),
        (2, "abort"),
    ]
    assert frame.finishes[0].complete.completion_tokens == 2
    assert _sessions(pushed) == {
        "sess": (
            [101],
            [1],
            [6],
            [
                (101, common.FINISH_REASON_LENGTH, _usage(4, 2, cached=1)),
                (102, common.FINISH_REASON_ABORT, _usage(4, 0)),
            ],
        )
    }
    assert not mux.live and not link.routed  # finished: detached


def test_held_routed_tokens_go_to_the_link_at_the_interval():
    async def run():
        mux = ServedGenerateStream(engine=None, max_queue=0)
        link = _link()
        a = _routed(mux, 1, link, every=3, delay=60.0)
        a.put_nowait(EngineOutput([1]))  # the first token is never held
        first = link.take()
        a.put_nowait(EngineOutput([2]))
        a.put_nowait(EngineOutput([3]))
        held = link.take()
        a.put_nowait(EngineOutput([4]))  # three gathered: they go
        released = link.take()
        a.put_nowait(EngineOutput([5]))
        a.release()  # the deadline passed
        late = link.take()
        frame = mux.take()
        if mux.timer is not None:
            mux.timer.cancel()
        return first, held, released, late, frame

    first, held, released, late, frame = asyncio.run(run())
    assert _sessions(first)["sess"][2] == [1]
    assert held is None
    assert _sessions(released)["sess"][2] == [2, 3, 4]
    assert _sessions(late)["sess"][2] == [5]
    assert list(frame.started) == [1] and not frame.token_ids


class _Engine:
    """What ServedGenerateStream asks of an engine here: its load, submit, abort."""

    info = SimpleNamespace(max_batch=4)

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.aborted: list[str] = []
        self.sinks: dict[str, _Sink] = {}

    def active_requests(self) -> int:
        return len(self.sinks)

    async def submit(self, request, sink):
        if self.refuse:
            raise EngineRequestError("the constraint does not compile", "constraint")
        self.sinks[request.request_id] = sink
        return SimpleNamespace(timed_out=False)

    async def abort(self, request_id: str) -> bool:
        self.aborted.append(request_id)
        return True


def _start(handle: int, rid: str, address: str = ADDRESS) -> pb.StreamStart:
    return pb.StreamStart(
        handle=handle,
        request=pb.GenerateRequest(request_id=rid, prompt_token_ids=[1, 2]),
        route=pb.ExtractRoute(address=address, session="sess", handle=50 + handle),
    )


def test_a_started_request_takes_its_route_and_a_refused_one_leaves_its_link():
    async def run():
        link = _link()
        engine = _Engine()
        mux = ServedGenerateStream(engine, max_queue=8, links=PushTokensStreams())
        mux.links.links[ADDRESS] = link
        await mux._start(1, _start(1, "req-1"))
        sink = engine.sinks["req-1"]
        routed = (sink.link, sink.session, sink.routed_handle, dict(link.routed))
        engine.refuse = True
        await mux._start(2, _start(2, "req-2"))
        return mux, link, routed, sink

    mux, link, (sink_link, session, handle, attached), sink = asyncio.run(run())
    assert sink_link is link and (session, handle) == ("sess", 51)
    assert list(attached) == [sink.link_key]
    assert list(link.routed) == [sink.link_key]  # the refused one is not left on the link
    assert mux.live == {1: "req-1"}
    (failure,) = mux.failures
    assert failure.handle == 2 and failure.status_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_a_broken_link_fails_its_routed_requests_and_aborts_their_work():
    async def run():
        engine = _Engine()
        mux = ServedGenerateStream(engine, max_queue=0)
        link, other = _link(), _link("10.9.9.9:50053")
        a, b = _routed(mux, 1, link), _routed(mux, 2, link)
        c = _routed(mux, 3, other)
        for s in (a, b, c):
            s.put_nowait(EngineOutput([1]))
        mux.take()
        link._broken(link.call, "the token stream to the extractor broke")
        await asyncio.sleep(0)  # the aborts run as tasks
        return mux, engine, c

    mux, engine, c = asyncio.run(run())
    frame = mux.take()
    assert [f.handle for f in frame.failures] == [1, 2]
    for f in frame.failures:
        assert f.status_code == grpc.StatusCode.UNAVAILABLE.value[0]
        # a code: the gateway does not take it for its replica being down
        assert f.metadata[CODE_KEY] == "service_unavailable"
        assert "10.1.2.3:50053" in f.details
    assert sorted(engine.aborted) == ["req-1", "req-2"]
    assert mux.live == {3: "req-3"} and c.link is not None


def test_tokens_after_a_broken_link_are_not_sent_to_the_gateway():
    """Between the link breaking and the engine's abort taking effect (up to a step), the
    request's outputs still come: they belong nowhere now, least of all on the gateway's
    stream, which carries no tokens of routed requests."""

    async def run():
        engine = _Engine()
        mux = ServedGenerateStream(engine, max_queue=0)
        link = _link()
        a = _routed(mux, 1, link)
        a.put_nowait(EngineOutput([1]))
        mux.take()
        link._broken(link.call, "the extractor ended the token stream")
        a.put_nowait(EngineOutput([2, 3]))  # the step that ran before the abort
        a.put_nowait(EngineOutput([], FinishReason.ABORT, 2, 3))
        await asyncio.sleep(0)
        return mux.take()

    frame = asyncio.run(run())
    assert [f.handle for f in frame.failures] == [1]
    assert not frame.handles and not frame.token_ids
    assert not frame.finishes  # it ended with its failure
