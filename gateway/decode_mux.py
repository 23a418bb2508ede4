"""The gateway's end of GenerateStream: one stream per decode replica, every request on it.

Why: a per-request Generate call costs the gateway one gRPC message read (a proto
parse, a completion through grpc.aio's poller, a coroutine wake-up) per token per request.
Here one reader task reads one frame per engine step and hands each request its new tokens;
the request's `DecodeHandle` is read like the per-request call was (`read()`, `cancel()`), and
fails with the same `AioRpcError` the per-request call would have raised, so the
orchestrator's retry and error paths stay as they are. Tokens that arrive while a request's
reader is busy are appended to what it has not read yet (merged, not queued per frame).

A stream that breaks (the replica died) fails every request on it with the stream's error;
the next request opens a new stream.

What it saves: `bench.run --model random:tiny --compare-mux` (docs/performance.md, The
service split).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Sequence
from typing import Protocol

import grpc

from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb

from .mux_stream import MuxHandle, MuxStream

log = logging.getLogger("toolwire.gateway")


class Forward(Protocol):
    """Where a request's tokens go as they arrive, instead of to read() (orchestrator._Forward)."""

    def tokens(self, ids: Sequence[int], /) -> None: ...

    def end(self, complete: pb.GenerateComplete, /) -> None: ...

    def fail(self, error: BaseException, /) -> None: ...


class DecodeHandle(MuxHandle):
    """One request on a multiplexed stream, read like a per-request Generate call: `read()`
    gives a list of new token ids, then the GenerateComplete, then grpc.aio.EOF; `cancel()`
    makes the decode replica abort it."""

    __slots__ = ("tokens", "complete", "forward")

    def __init__(self, stream: DecodeStream, handle: int):
        super().__init__(stream, handle)
        self.tokens: list[int] = []
        self.complete: pb.GenerateComplete | None = None
        # Set once the request streams with both streams multiplexed (orchestrator._Forward):
        # what arrives goes to it at once instead of waiting here for a read().
        self.forward: Forward | None = None

    def _take(self):
        if self.tokens:
            tokens, self.tokens = self.tokens, []
            return tokens
        if self.complete is not None:
            complete, self.complete = self.complete, None
            return complete
        return None

    def _finish(self, complete: pb.GenerateComplete) -> None:
        self.ended = True
        if self.forward is not None:
            self.forward.end(complete)
            return
        self.complete = complete
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.forward is not None:
            self.ended = True
            self.forward.fail(error)
            return
        super()._fail(error)


class DecodeStream(MuxStream):
    """The multiplexed stream to one decode replica, opened on first use and again after it
    broke."""

    ended_details = "the decode stream ended"

    def __init__(self, stub, metadata) -> None:
        self.stub = stub
        self.metadata = metadata
        self.call = None
        self.handles: dict[int, DecodeHandle] = {}
        self.ids = itertools.count(1)
        self.outbox: collections.deque[pb.StreamRequest] = collections.deque()
        self.has_mail = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def open(self, request: pb.GenerateRequest, interval: tuple[int, int] = (0, 0)) -> DecodeHandle:
        """Start `request`; `interval` (tokens, ms) is its stream interval, held on the decode
        side (services/decode/mux.py) so that held tokens cost no frame at all."""
        if self.call is None:
            self._connect()
        handle = DecodeHandle(self, next(self.ids))
        self.handles[handle.handle] = handle
        tokens, ms = interval
        self._send(
            pb.StreamRequest(
                start=pb.StreamStart(
                    handle=handle.handle,
                    request=request,
                    interval_tokens=tokens if tokens > 1 else 0,
                    interval_ms=ms,
                )
            )
        )
        return handle

    def forget(self, handle: int, cancel: bool) -> None:
        if self.handles.pop(handle, None) is not None and cancel and self.call is not None:
            self._send(pb.StreamRequest(cancel=pb.StreamCancel(handle=handle)))

    # -- internals ---------------------------------------------------------------------
    def _send(self, msg: pb.StreamRequest) -> None:
        self.outbox.append(msg)
        self.has_mail.set()

    def _connect(self) -> None:
        call = self.stub.GenerateStream(metadata=self.metadata)
        self.call = call
        self.outbox.clear()
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._write(call)), loop.create_task(self._read(call))]

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while True:
                await self.has_mail.wait()
                self.has_mail.clear()
                while self.outbox and self.call is call:
                    await call.write(self.outbox.popleft())
                if self.call is not call:
                    return
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the reader sees why the stream broke and fails its requests

    def _dispatch(self, frame: pb.StreamFrame) -> None:
        handles = self.handles
        ids = frame.token_ids
        pos = 0
        for h, n in zip(frame.handles, frame.counts):
            handle = handles.get(h)
            if handle is not None:
                if handle.forward is not None:
                    handle.forward.tokens(ids[pos : pos + n])
                else:
                    handle.tokens.extend(ids[pos : pos + n])
                    handle._wake()
            pos += n
        for f in frame.finishes:
            handle = handles.pop(f.handle, None)
            if handle is not None:
                handle._finish(f.complete)
        self._fail_each(frame.failures)
