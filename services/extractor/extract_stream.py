"""ExtractStream: the gateway's requests on one stream; one frame of deltas per frame taken in.

Why: the per-request Extract call costs one gRPC message in and one out per token
per request, each a proto parse, a completion through grpc.aio's poller and a coroutine
wake-up in the extractor and in the gateway. Here the gateway sends one decode frame's tokens
for all of its requests as one message; this handler runs every request's `Extraction` on it
in one pass and puts the deltas into the stream's pending frame, which one writer coroutine
sends. A frame still unsent when the next message has been read takes its deltas too: a
request's new delta is merged into its pending one where the order of content and calls
allows (the pending frame is the only buffer, bounded by the requests' own text).

The gateway's own requests take their tokens from the decode replicas directly
(`ExtractorService.PushTokens`, decode.proto's ExtractRoute): the gateway names its stream with
a session id in the call's metadata, and a replica's message for that session is run here
exactly as the tokens of an ExtractStreamRequest are (`push`), its deltas going down this
stream. So a token crosses the gateway not at all, and a step costs two messages (decode to
extractor, extractor to gateway) instead of three. Tokens pushed for a handle whose start has
not been read yet (the gateway's start and the replica's first tokens travel on different
connections) wait in `early` until it is.

Per-request refusals (an unknown tool format) and faults are failure entries with the status
and trailing metadata the request's own Extract call would have ended with; the stream
ending drops every request on it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from toolwire.errors import RequestError, grpc_status
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.plumbing.delta_merge import merge
from toolwire.plumbing.request_context import SESSION_KEY
from toolwire.vocabulary import FinishReason
from toolwire.wire_enums import finish_from_proto

from .extraction import Extraction

if TYPE_CHECKING:
    from .server import ExtractorServicer

log = logging.getLogger("toolwire.extractor")


def failure(handle: int, err: RequestError) -> pb.ExtractStreamFailure:
    """What abort_with() would have put on a per-request call."""
    code, md = grpc_status(err)
    return pb.ExtractStreamFailure(
        handle=handle, status_code=code.value[0], details=err.message, metadata=dict(md)
    )


class ServedExtractStream:
    """One ExtractStream call: its requests, its pending frame."""

    def __init__(self, servicer: ExtractorServicer):
        self.servicer = servicer
        self.states: dict[int, Extraction] = {}
        self.ids: dict[int, str] = {}  # handle -> request id, for log lines
        self.handles: list[int] = []
        # A plain request's text is kept as a str until the frame is built (no response
        # object per token: Extraction.plain).
        self.deltas: list[pb.ExtractResponse | str] = []
        self.last: dict[int, int] = {}  # handle -> its latest entry in deltas
        self.failures: list[pb.ExtractStreamFailure] = []
        self.ready = asyncio.Event()
        self.reading = True
        self.newest = 0  # the highest handle started: handles grow, so a lower one has ended
        # handle -> pushed token chunks and end not yet taken, before its start was read
        self.early: dict[int, list[tuple[object, object]]] = {}

    def take(self) -> pb.ExtractStreamFrame | None:
        if not (self.handles or self.failures):
            return None
        frame = pb.ExtractStreamFrame(handles=self.handles, failures=self.failures)
        # Built in place: a response added is not copied, as one passed in would be (0.3 µs
        # a delta against 1.0).
        add = frame.deltas.add
        for d in self.deltas:
            if isinstance(d, str):
                add(content=d)
            else:
                add().CopyFrom(d)
        self.handles, self.deltas, self.failures = [], [], []
        self.last.clear()
        return frame

    def _put(self, handle: int, resp: pb.ExtractResponse | str) -> None:
        i = self.last.get(handle)
        if i is not None:
            last = self.deltas[i]
            if isinstance(resp, str):
                if isinstance(last, str):
                    self.deltas[i] = last + resp
                    return
                resp = pb.ExtractResponse(content=resp)
            elif isinstance(last, str):
                last = self.deltas[i] = pb.ExtractResponse(content=last)
            if merge(last, resp):
                return
        self.last[handle] = len(self.deltas)
        self.handles.append(handle)
        self.deltas.append(resp)

    def _fail(self, handle: int, err: RequestError) -> None:
        self._drop(handle)
        self.failures.append(failure(handle, err))

    def _run(self, handle: int, step, arg) -> None:
        """One step of one request; a fault fails that request only."""
        state = self.states.get(handle)
        if state is None:
            return  # cancelled, failed or already ended by a stop string
        try:
            resp = step(state, arg)
        except Exception:  # noqa: BLE001 - a fault in one request's parse is its own failure
            log.exception("extracting request %s failed", self.ids.get(handle, handle))
            self._fail(handle, RequestError("extraction failed", status=500, type="server_error"))
            return
        if resp is not None:
            self._put(handle, resp)
        if state.done:
            self._drop(handle)
            if state.unparsed:
                self.servicer.unparsed += 1

    def handle(self, msg: pb.ExtractStreamRequest) -> None:
        servicer = self.servicer
        for start in msg.starts:
            servicer.streams += 1
            self.ids[start.handle] = start.request_id
            self.newest = max(self.newest, start.handle)
            try:
                self.states[start.handle] = Extraction(
                    start.setup, servicer.tokenizer, servicer.default_format
                )
            except RequestError as e:
                self._fail(start.handle, e)
            for step, arg in self.early.pop(start.handle, ()):
                self._run(start.handle, step, arg)
        ids = msg.token_ids
        pos = 0
        for h, n in zip(msg.handles, msg.counts):
            chunk = ids[pos : pos + n]
            pos += n
            self._run(h, Extraction.text_or_tokens, chunk)
        for end in msg.ends:
            self._run(end.handle, Extraction.end, end.finish_reason)
        for h in msg.cancels:
            self._drop(h)

    def push(self, tokens: pb.SessionTokens) -> None:
        """One decode step's tokens and ends for this stream's routed requests."""
        ids = tokens.token_ids
        pos = 0
        for h, n in zip(tokens.handles, tokens.counts):
            self._routed(h, Extraction.text_or_tokens, ids[pos : pos + n])
            pos += n
        for end in tokens.ends:
            self._routed(end.handle, _end, end)
        self.ready.set()

    def _routed(self, handle: int, step, arg) -> None:
        if handle in self.states:
            self._run(handle, step, arg)
        elif handle > self.newest:  # its start is still on its way
            self.early.setdefault(handle, []).append((step, arg))

    def _drop(self, handle: int) -> None:
        self.states.pop(handle, None)
        self.ids.pop(handle, None)

    async def read(self, requests) -> None:
        try:
            async for msg in requests:
                self.handle(msg)
                self.ready.set()
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the stream broke: end it
            pass
        finally:
            self.reading = False
            self.ready.set()


def _end(state: Extraction, end: pb.RoutedEnd) -> pb.ExtractResponse:
    # unspecified (a peer that set no reason) ends the turn loudly, as decode's abort does
    return state.end(finish_from_proto(end.finish_reason) or FinishReason.ABORT, end.usage)


async def serve_stream(servicer, requests, context) -> None:
    """The ExtractStream handler: read frames, write one frame of deltas per wake-up."""
    mux = ServedExtractStream(servicer)
    session = dict(context.invocation_metadata() or ()).get(SESSION_KEY, "")
    if session:  # named before the headers go: a request routed here finds it
        servicer.sessions[session] = mux
    # Headers at once: the gateway's first request waits for them to know the stream is up.
    await context.send_initial_metadata(())
    reader = asyncio.create_task(mux.read(requests))
    try:
        while True:
            await mux.ready.wait()
            mux.ready.clear()
            frame = mux.take()
            if frame is not None:
                await context.write(frame)
            if not mux.reading:
                break
    finally:
        reader.cancel()
        mux.states.clear()
        mux.early.clear()
        if session and servicer.sessions.get(session) is mux:
            del servicer.sessions[session]
