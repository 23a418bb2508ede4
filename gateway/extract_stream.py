"""The gateway's end of ExtractStream: one stream per extractor pod, every request on it.

Why: this is where a request's deltas come from. The gateway opens a request's extraction here
(its setup: tools, format, stop strings), then starts its decoding with a route to this stream
(generate_stream.py): the decode replica pushes the tokens to the pod directly, and the pod
sends the deltas down this stream, so the gateway reads text, never token ids. The stream is
named by a session id in its metadata (`toolwire-session`), which the route carries.

One reader task reads one frame of deltas and hands each request its own; deltas that arrive
while a request's reader is busy are merged into what it has not read yet (the same rule as the
extractor's pending frame, services/extractor/extract_stream.py), never queued per frame. A
refusal or fault fails the request's entry with the `AioRpcError` a per-request call would have
raised. A stream that breaks (the pod died) fails every request on it with the stream's error;
the next request opens a new stream, under a new session.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets

import grpc

from toolwire.grpc_gen.decode.v1 import decode_pb2 as dpb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.plumbing.delta_merge import merge
from toolwire.plumbing.request_context import SESSION_KEY

from .stream_base import StreamBase, StreamEntry


class ExtractEntry(StreamEntry):
    """One request on an ExtractStream: `read()` until a response with finish_reason;
    `cancel()` drops it; `route` is where its decoding sends its tokens."""

    __slots__ = ("pending", "route")

    stream: ExtractStream

    def __init__(self, stream: ExtractStream, handle: int, route: dpb.ExtractRoute):
        super().__init__(stream, handle)
        self.pending: list[pb.ExtractResponse] = []
        self.route = route

    def _take(self) -> pb.ExtractResponse | None:
        return self.pending.pop(0) if self.pending else None

    def _deliver(self, resp: pb.ExtractResponse) -> None:
        if not (self.pending and merge(self.pending[-1], resp)):
            self.pending.append(resp)
        if resp.finish_reason:
            self.ended = True
        self._wake()


class ExtractStream(StreamBase):
    """The stream to one extractor pod (at `address`, as decode replicas dial it too), opened
    on first use and again after it broke."""

    ended_details = "the extractor stream ended"

    def __init__(self, address: str, stub, metadata) -> None:
        self.address = address
        self.stub = stub
        self.metadata = tuple(metadata or ())
        self.session = ""
        self.call = None
        self.connecting: asyncio.Future | None = None
        self.entries: dict[int, ExtractEntry] = {}
        self.ids = itertools.count(1)
        self._clear()
        self.has_mail = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def _clear(self) -> None:
        self.starts: list[pb.ExtractStreamStart] = []
        self.cancels: list[int] = []

    async def open(self, setup: pb.ExtractSetup, request_id: str = "") -> ExtractEntry:
        """A new request on this stream. The first one waits for the stream's headers (the pod
        has named the session by then), so an unreachable pod fails it with UNAVAILABLE before
        any response starts."""
        if self.call is None:
            await self._connect()
        handle = next(self.ids)
        entry = ExtractEntry(
            self,
            handle,
            dpb.ExtractRoute(address=self.address, session=self.session, handle=handle),
        )
        self.entries[handle] = entry
        self.starts.append(pb.ExtractStreamStart(handle=handle, setup=setup, request_id=request_id))
        self.has_mail.set()
        return entry

    def forget(self, handle: int, cancel: bool) -> None:
        if self.entries.pop(handle, None) is not None and cancel and self.call is not None:
            self.cancels.append(handle)
            self.has_mail.set()

    # -- internals ---------------------------------------------------------------------
    async def _connect(self) -> None:
        if self.connecting is not None:  # another request is connecting: wait for it
            await asyncio.shield(self.connecting)
            return
        self.connecting = asyncio.get_running_loop().create_future()
        try:
            session = secrets.token_hex(8)
            call = self.stub.ExtractStream(metadata=self.metadata + ((SESSION_KEY, session),))
            try:
                # The pod's headers: it sends them once it has named the session, so a route
                # given out from here finds it. (wait_for_connection alone returns once our own
                # metadata is out.) Then wait_for_connection raises if the call failed instead.
                await call.initial_metadata()
                await call.wait_for_connection()
            except grpc.aio.AioRpcError:
                call.cancel()
                raise
            self.call, self.session = call, session
            self._clear()
            loop = asyncio.get_running_loop()
            self.tasks = [loop.create_task(self._write(call)), loop.create_task(self._read(call))]
            self.connecting.set_result(None)
        except BaseException as e:
            self.connecting.set_exception(e)
            self.connecting.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self.connecting = None

    def _take(self) -> pb.ExtractStreamRequest | None:
        if not (self.starts or self.cancels):
            return None
        msg = pb.ExtractStreamRequest(starts=self.starts, cancels=self.cancels)
        self._clear()
        return msg

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while self.call is call:
                await self.has_mail.wait()
                self.has_mail.clear()
                msg = self._take()
                if msg is not None and self.call is call:
                    await call.write(msg)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            return  # the reader sees why the stream broke and fails its requests

    def _dispatch(self, frame: pb.ExtractStreamFrame) -> None:
        entries = self.entries
        for h, resp in zip(frame.handles, frame.deltas):
            entry = entries.get(h)
            if entry is not None:
                if resp.finish_reason:
                    del entries[h]
                entry._deliver(resp)
        self._fail_each(frame.failures)
