"""The gateway's end of GenerateStream: one stream per decode replica, every request on it.

Why: a per-request Generate call costs one gRPC message per token per request. Here a request
starts with an ExtractRoute (decode.proto), so its tokens go from the replica straight to its
extractor pod and never come here; this stream carries each request's start, the notice that
its first tokens went out (`started`), its finish and any failure: a few messages a request,
not one a token. The gateway keeps what only it can do on it: cancel a request (the slot is
freed within one step) and retry one that has produced nothing when its replica fails.

A stream that breaks (the replica died) fails every request on it with the stream's error;
the next request opens a new stream.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable

import grpc

from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb

from .stream_base import StreamBase, StreamEntry

log = logging.getLogger("toolwire.gateway")


class GenerateEntry(StreamEntry):
    """One request on a GenerateStream. `started()` returns once its first tokens went to its
    extractor, or raises the error it failed with; after that, `on_fail` hears of a failure."""

    __slots__ = ("begun", "complete", "on_fail")

    def __init__(self, stream: GenerateStream, handle: int):
        super().__init__(stream, handle)
        self.begun = False
        self.complete: pb.GenerateComplete | None = None
        self.on_fail: Callable[[BaseException], None] | None = None

    def _take(self):
        # A failure in the frame that started it (or before the run read it) is the answer:
        # nothing has reached the client, so the run may still retry.
        return True if self.begun and self.error is None else None

    async def started(self) -> None:
        """Wait for the first tokens; raise the request's failure. A request that finished
        without a token (aborted while queued) counts as started: its extractor says how it
        ended."""
        if await self.read() is grpc.aio.EOF and self.complete is None:
            raise RuntimeError("a request ended with neither a finish nor a failure")

    def _start(self) -> None:
        self.begun = True
        self._wake()

    def _finish(self, complete: pb.GenerateComplete) -> None:
        self.ended = True
        self.complete = complete
        self._wake()

    def _fail(self, error: BaseException) -> None:
        super()._fail(error)
        if self.on_fail is not None:
            self.on_fail(error)


class GenerateStream(StreamBase):
    """The stream to one decode replica, opened on first use and again after it broke."""

    ended_details = "the decode stream ended"

    def __init__(self, stub, metadata) -> None:
        self.stub = stub
        self.metadata = metadata
        self.call = None
        self.entries: dict[int, GenerateEntry] = {}
        self.ids = itertools.count(1)
        self.outbox: collections.deque[pb.StreamRequest] = collections.deque()
        self.has_mail = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def open(
        self,
        request: pb.GenerateRequest,
        route: pb.ExtractRoute,
        interval: tuple[int, int] = (0, 0),
    ) -> GenerateEntry:
        """Start `request`, its tokens sent along `route`; `interval` (tokens, ms) is its
        stream interval, held on the decode side (services/decode/generate_stream.py) so that
        held tokens cost no message at all."""
        if self.call is None:
            self._connect()
        entry = GenerateEntry(self, next(self.ids))
        self.entries[entry.handle] = entry
        tokens, ms = interval
        self._send(
            pb.StreamRequest(
                start=pb.StreamStart(
                    handle=entry.handle,
                    request=request,
                    interval_tokens=tokens if tokens > 1 else 0,
                    interval_ms=ms,
                    route=route,
                )
            )
        )
        return entry

    def forget(self, handle: int, cancel: bool) -> None:
        if self.entries.pop(handle, None) is not None and cancel and self.call is not None:
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
        entries = self.entries
        for h in frame.started:
            entry = entries.get(h)
            if entry is not None:
                entry._start()
        if frame.handles:  # tokens on this stream: a request started without a route
            log.warning("decode sent %d token runs on the gateway's stream", len(frame.handles))
        for f in frame.finishes:
            entry = entries.pop(f.handle, None)
            if entry is not None:
                entry._finish(f.complete)
        self._fail_each(frame.failures)
