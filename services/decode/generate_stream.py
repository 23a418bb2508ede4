"""GenerateStream: the gateway's requests on one stream, one frame per engine step back.

Why: the per-request Generate RPC costs one gRPC message (and one event-loop wake-up of a
per-request coroutine) per token per request; the engine has all of a step's tokens in one
place. Here the engine pushes each step's outputs straight into this stream's pending frame
(`_Sink.put_nowait`, called for all of a step's outputs in one loop callback), and one writer
coroutine sends that frame. A frame still unsent when the next step ends takes that step's
tokens too: the pending frame is the only buffer, bounded by the requests' own tokens.

The stream interval (StreamStart.interval_tokens / interval_ms, from the gateway's
--stream-interval or a ChatService request's own) is held here, in the request's sink: held
tokens cost no frame, no gateway wake-up, no extractor message and no SSE event, which is the
whole point (holding them at the gateway would still pay this stream's frames and the
gateway's reads). The first token and the finish go at once; one timer per stream releases
held tokens at their deadline, so a held token never waits for a later engine step (another
request's long prefill).

A request started with an ExtractRoute has its tokens and finish sent to its extractor pod
instead (push_tokens.py); this stream then names it in `started` once, with its first
tokens' step, and still carries its finish and any failure, so the gateway knows it is running,
can cancel it, and can retry it elsewhere while nothing has been produced.

Failures are sent as the status and trailing metadata the per-request call would have ended
with, so the gateway rebuilds the same errors. The stream ending, either way, aborts every
request still running on it.
"""

from __future__ import annotations

import asyncio
import itertools

from toolwire.errors import RequestError, grpc_status, unavailable
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.plumbing import request_context
from toolwire.vocabulary import ErrorCode, FinishReason
from toolwire.wire_enums import set_finish

from .admission import admit, engine_request, request_error
from .engine import Engine, EngineOutput, Submission
from .push_tokens import PushTokensStream, PushTokensStreams

# A stream interval given in tokens only still has a deadline: a held token waits this long at
# most, whatever the engine's steps take.
DEFAULT_INTERVAL_MS = 50


def complete_message(out: EngineOutput) -> pb.GenerateComplete:
    """The finish of a request, as both Generate and GenerateStream send it."""
    assert out.finish_reason is not None, "only a finished output completes a request"
    complete = pb.GenerateComplete(
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        cached_tokens=out.cached_tokens,
    )
    set_finish(complete, out.finish_reason)
    return complete


def failure(handle: int, err: RequestError) -> pb.StreamFailure:
    """What abort_with() would have put on a per-request call."""
    code, md = grpc_status(err)
    return pb.StreamFailure(
        handle=handle, status_code=code.value[0], details=err.message, metadata=dict(md)
    )


class _Sink:
    """Where the engine puts one request's outputs: straight into the pending frame (or, routed,
    its extract link's pending message), or (with a stream interval) into `held` until `every`
    tokens have gathered or the mux's timer finds `delay` seconds passed since the first of
    them."""

    __slots__ = (
        "mux",
        "handle",
        "state",
        "every",
        "delay",
        "held",
        "since",
        "sent",
        "link",
        "session",
        "routed_handle",
        "link_key",
        "request_id",
        "failed",
    )

    def __init__(self, mux: ServedGenerateStream, handle: int, every: int = 0, delay: float = 0.0):
        self.mux = mux
        self.handle = handle
        self.state: Submission | None = None  # what engine.submit returned (its timed_out)
        self.every = every  # hold until this many tokens (0 or 1: never hold)
        self.delay = delay  # ... or until this many seconds after the first held one
        self.held: list[int] = []
        self.since = 0.0
        self.sent = 0  # tokens put in frames so far
        # routed (StreamStart.route): the link to the extractor, the request's session and
        # handle there, and its key on the link
        self.link: PushTokensStream | None = None
        self.session = ""
        self.routed_handle = 0
        self.link_key = 0
        self.request_id = ""
        self.failed = False  # its link broke: what the engine still hands over goes nowhere

    def route(self, link: PushTokensStream, session: str, handle: int, request_id: str) -> None:
        self.link, self.session, self.routed_handle = link, session, handle
        self.request_id = request_id
        self.link_key = link.attach(self.link_broken)

    def link_broken(self, why: str) -> None:
        """The extractor this request's tokens go to is gone: fail it, stop its work."""
        if self.handle not in self.mux.live:
            return
        self.link = None
        self.failed = True
        self.fail(unavailable(why))
        self.mux.abort_later(self.request_id)

    def put_nowait(self, out: EngineOutput) -> None:
        if self.failed:  # the abort's last outputs: its failure has been sent
            return
        mux = self.mux
        ids = out.token_ids
        if self.every > 1:
            held = self.held
            if self.sent and out.finish_reason is None:  # first token and finish never held
                if not ids:
                    return
                if not held:
                    mux.hold(self)
                held.extend(ids)
                if len(held) < self.every:
                    return
                ids = held
            elif held:
                ids = held + list(ids)
            if held:
                self.held = []
                mux.holding.pop(self.handle, None)
        if ids:
            self._push(ids)
        if out.finish_reason:
            mux.live.pop(self.handle, None)
            link = self.link
            if link is not None:
                link.detach(self.link_key)
                link.put_end(
                    self.session,
                    self.routed_handle,
                    out.finish_reason,
                    common.Usage(
                        prompt_tokens=out.prompt_tokens,
                        completion_tokens=out.completion_tokens,
                        total_tokens=out.prompt_tokens + out.completion_tokens,
                        cached_tokens=out.cached_tokens,
                    ),
                )
            if out.finish_reason == FinishReason.ABORT and getattr(self.state, "timed_out", False):
                mux.failures.append(
                    failure(
                        self.handle,
                        unavailable(
                            "no decode slot came free in time", code=ErrorCode.QUEUE_TIMEOUT
                        ),
                    )
                )
            else:
                mux.finishes.append(
                    pb.StreamFinish(handle=self.handle, complete=complete_message(out))
                )
        mux.ready.set()

    def _push(self, ids) -> None:
        link = self.link
        if link is not None:
            if not self.sent:
                self.mux.started.append(self.handle)
            self.sent += len(ids)
            link.put_tokens(self.session, self.routed_handle, ids)
            return
        self.sent += len(ids)
        pending = self.mux.tokens.get(self.handle)
        if pending is None:
            self.mux.tokens[self.handle] = list(ids)
        else:
            pending.extend(ids)

    def release(self) -> None:
        """The held tokens into the pending frame (the interval's deadline passed)."""
        held, self.held = self.held, []
        if held:
            self._push(held)

    def fail(self, exc: Exception) -> None:
        mux = self.mux
        if self.link is not None:
            self.link.detach(self.link_key)
        mux.live.pop(self.handle, None)
        mux.holding.pop(self.handle, None)
        mux.failures.append(failure(self.handle, request_error(exc)))
        mux.ready.set()


class ServedGenerateStream:
    """One GenerateStream call: its requests, its pending frame."""

    def __init__(self, engine: Engine, max_queue: int, links: PushTokensStreams | None = None):
        self.engine = engine
        self.max_queue = max_queue
        self.links = links or PushTokensStreams()
        self.started: list[int] = []  # routed requests whose first tokens went out this step
        self.live: dict[int, str] = {}  # handle -> request id, started and not finished
        self.starting: dict[int, bool] = {}  # handle -> cancelled while starting
        self.tokens: dict[int, list[int]] = {}
        self.finishes: list[pb.StreamFinish] = []
        self.failures: list[pb.StreamFailure] = []
        self.ready = asyncio.Event()
        self.reading = True
        self.tasks: set[asyncio.Task] = set()
        # The stream interval: requests holding tokens, and the one timer that releases those
        # whose deadline has passed (armed for the earliest; none while nothing is held).
        self.holding: dict[int, _Sink] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def hold(self, sink: _Sink) -> None:
        sink.since = self.loop.time()
        self.holding[sink.handle] = sink
        due = sink.since + sink.delay
        if self.timer is None or due < self.timer.when():
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(due, self._expire)

    def _expire(self) -> None:
        """Release every request whose held tokens are due (or nearly: within a quarter of its
        delay, so one wake-up serves requests that started holding a step apart)."""
        self.timer = None
        now, soonest = self.loop.time(), None
        for h, sink in list(self.holding.items()):
            due = sink.since + sink.delay
            if due <= now + sink.delay / 4:
                del self.holding[h]
                sink.release()
            elif soonest is None or due < soonest:
                soonest = due
        if soonest is not None:
            self.timer = self.loop.call_at(soonest, self._expire)
        self.ready.set()

    def take(self) -> pb.StreamFrame | None:
        """The pending frame, emptied."""
        if not (self.tokens or self.finishes or self.failures or self.started):
            return None
        tokens, self.tokens = self.tokens, {}
        frame = pb.StreamFrame(
            handles=tokens.keys(),
            counts=[len(t) for t in tokens.values()],
            token_ids=list(itertools.chain.from_iterable(tokens.values())),
            finishes=self.finishes,
            failures=self.failures,
            started=self.started,
        )
        self.finishes, self.failures, self.started = [], [], []
        return frame

    def abort_later(self, request_id: str) -> None:
        task = asyncio.create_task(self.engine.abort(request_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def read(self, requests) -> None:
        try:
            async for msg in requests:
                if msg.HasField("start"):
                    h = msg.start.handle
                    self.starting[h] = False
                    task = asyncio.create_task(self._start(h, msg.start))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
                else:
                    await self._cancel(msg.cancel.handle)
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the stream broke: end it
            pass
        finally:
            self.reading = False
            self.ready.set()

    async def _cancel(self, handle: int) -> None:
        if handle in self.starting:
            self.starting[handle] = True
        elif (rid := self.live.get(handle)) is not None:
            await self.engine.abort(rid)

    async def _start(self, handle: int, start: pb.StreamStart) -> None:
        request = start.request
        request_context.bind_id(request.request_id)  # this task's log lines name it
        sink: _Sink | None = None
        try:
            admit(self.engine, self.max_queue, request)
            sink = _Sink(
                self,
                handle,
                start.interval_tokens,
                (start.interval_ms or DEFAULT_INTERVAL_MS) / 1000,
            )
            if start.HasField("route"):
                r = start.route
                sink.route(self.links.get(r.address), r.session, r.handle, request.request_id)
            self.live[handle] = request.request_id
            sink.state = await self.engine.submit(engine_request(request), sink)
        except Exception as e:  # noqa: BLE001 - every refusal becomes this request's failure
            self.live.pop(handle, None)
            if sink is not None and sink.link is not None:
                sink.link.detach(sink.link_key)
            self.failures.append(failure(handle, request_error(e)))
            self.ready.set()
            return
        finally:
            cancelled = self.starting.pop(handle, False)
        if cancelled and handle in self.live:
            await self.engine.abort(request.request_id)

    async def abort_all(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for task in list(self.tasks):
            task.cancel()
        for rid in list(self.live.values()):
            await self.engine.abort(rid)
        self.live.clear()


async def serve_stream(
    engine: Engine, max_queue: int, requests, context, links: PushTokensStreams | None = None
) -> None:
    """The GenerateStream handler: read starts and cancels, write one frame per wake-up."""
    mux = ServedGenerateStream(engine, max_queue, links)
    reader = asyncio.create_task(mux.read(requests))
    try:
        while True:
            await mux.ready.wait()
            mux.ready.clear()
            frame = mux.take()
            if frame is not None:
                await context.write(frame)
            if not mux.reading and not mux.live and not mux.starting:
                break
    finally:
        reader.cancel()
        await mux.abort_all()
