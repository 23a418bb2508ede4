"""GenerateStream: the gateway's requests on one stream, one frame per engine step back.

Why: the per-request Generate RPC costs one gRPC message (and one event-loop wake-up of a
per-request coroutine) per token per request; the engine has all of a step's tokens in one
place. Here the engine pushes each step's outputs straight into this stream's pending frame
(`_Sink.put_nowait`, called for all of a step's outputs in one loop callback), and one writer
coroutine sends that frame. A frame still unsent when the next step ends takes that step's
tokens too: the pending frame is the only buffer, bounded by the requests' own tokens.

Failures are sent as the status and trailing metadata the per-request call would have ended
with, so the gateway rebuilds the same errors. The stream ending, either way, aborts every
request still running on it.
"""

from __future__ import annotations

import asyncio
import itertools

from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.plumbing import request_context
from toolwire.request.errors import RequestError, grpc_status, unavailable

from .admission import admit, engine_request, request_error
from .engine import Engine, EngineOutput


def complete_message(out: EngineOutput) -> pb.GenerateComplete:
    """The finish of a request, as both Generate and GenerateStream send it."""
    return pb.GenerateComplete(
        finish_reason=out.finish_reason,
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        cached_tokens=out.cached_tokens,
    )


def failure(handle: int, err: RequestError) -> pb.StreamFailure:
    """What abort_with() would have put on a per-request call."""
    code, md = grpc_status(err)
    return pb.StreamFailure(
        handle=handle, status_code=code.value[0], details=err.message, metadata=dict(md)
    )


class _Sink:
    """Where the engine puts one request's outputs: straight into the pending frame."""

    __slots__ = ("mux", "handle", "state")

    def __init__(self, mux: StreamMux, handle: int):
        self.mux = mux
        self.handle = handle
        self.state = None  # what engine.submit returned (its timed_out)

    def put_nowait(self, out: EngineOutput) -> None:
        mux = self.mux
        if out.token_ids:
            pending = mux.tokens.get(self.handle)
            if pending is None:
                mux.tokens[self.handle] = list(out.token_ids)
            else:
                pending.extend(out.token_ids)
        if out.finish_reason:
            mux.live.pop(self.handle, None)
            if out.finish_reason == "abort" and getattr(self.state, "timed_out", False):
                mux.failures.append(
                    failure(
                        self.handle,
                        unavailable("no decode slot came free in time", code="queue_timeout"),
                    )
                )
            else:
                mux.finishes.append(
                    pb.StreamFinish(handle=self.handle, complete=complete_message(out))
                )
        mux.ready.set()

    def fail(self, exc: Exception) -> None:
        mux = self.mux
        mux.live.pop(self.handle, None)
        mux.failures.append(failure(self.handle, request_error(exc)))
        mux.ready.set()


class StreamMux:
    """One GenerateStream call: its requests, its pending frame."""

    def __init__(self, engine: Engine, max_queue: int):
        self.engine = engine
        self.max_queue = max_queue
        self.live: dict[int, str] = {}  # handle -> request id, started and not finished
        self.starting: dict[int, bool] = {}  # handle -> cancelled while starting
        self.tokens: dict[int, list[int]] = {}
        self.finishes: list[pb.StreamFinish] = []
        self.failures: list[pb.StreamFailure] = []
        self.ready = asyncio.Event()
        self.reading = True
        self.tasks: set[asyncio.Task] = set()

    def take(self) -> pb.StreamFrame | None:
        """The pending frame, emptied."""
        if not (self.tokens or self.finishes or self.failures):
            return None
        tokens, self.tokens = self.tokens, {}
        frame = pb.StreamFrame(
            handles=tokens.keys(),
            counts=[len(t) for t in tokens.values()],
            token_ids=list(itertools.chain.from_iterable(tokens.values())),
            finishes=self.finishes,
            failures=self.failures,
        )
        self.finishes, self.failures = [], []
        return frame

    async def read(self, requests) -> None:
        try:
            async for msg in requests:
                if msg.HasField("start"):
                    h = msg.start.handle
                    self.starting[h] = False
                    task = asyncio.create_task(self._start(h, msg.start.request))
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

    async def _start(self, handle: int, request: pb.GenerateRequest) -> None:
        request_context.bind_id(request.request_id)  # this task's log lines name it
        try:
            admit(self.engine, self.max_queue, request)
            sink = _Sink(self, handle)
            self.live[handle] = request.request_id
            sink.state = await self.engine.submit(engine_request(request), sink)
        except Exception as e:  # noqa: BLE001 - every refusal becomes this request's failure
            self.live.pop(handle, None)
            self.failures.append(failure(handle, request_error(e)))
            self.ready.set()
            return
        finally:
            cancelled = self.starting.pop(handle, False)
        if cancelled and handle in self.live:
            await self.engine.abort(request.request_id)

    async def abort_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for rid in list(self.live.values()):
            await self.engine.abort(rid)
        self.live.clear()


async def serve_stream(engine: Engine, max_queue: int, requests, context) -> None:
    """The GenerateStream handler: read starts and cancels, write one frame per wake-up."""
    mux = StreamMux(engine, max_queue)
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
