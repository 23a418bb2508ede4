"""The gateway's end of ExtractStream: one stream per extractor pod, every request on it.

Why: a per-request Extract call costs the gateway one gRPC message written and one
read per token per request, and the extractor as much again. Here a request's new tokens go
into the stream's pending outgoing message (`ExtractHandle.tokens`, no I/O); one writer task
sends it when the event loop next runs it, so the tokens that one decode frame handed to all
of this gateway's requests leave as one message (the requests' pumps all run before the
writer). One reader task reads one frame of deltas and hands each request its own; deltas that
arrive while a request's reader is busy are merged into what it has not read yet (the same
rule as the extractor's pending frame, services/extractor/mux.py), never queued per frame.

A request's handle is read like the per-request call (`read()` gives ExtractResponses; a
refusal or fault raises the same `AioRpcError` the per-request call would have), so the
orchestrator's error paths stay as they are. A stream that breaks (the pod died) fails every
request on it with the stream's error; the next request opens a new stream.
"""

from __future__ import annotations

import asyncio
import itertools

import grpc

from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.plumbing.delta_merge import merge
from toolwire.wire_enums import set_finish

from .mux_stream import MuxHandle, MuxStream


class ExtractHandle(MuxHandle):
    """One request on a multiplexed stream: `tokens`, `end`, then `read()` until a response
    with finish_reason; `cancel()` drops it."""

    __slots__ = ("pending",)

    stream: ExtractStream

    def __init__(self, stream: ExtractStream, handle: int):
        super().__init__(stream, handle)
        self.pending: list[pb.ExtractResponse] = []

    async def tokens(self, ids) -> None:
        if not self.ended:
            self.stream.put_tokens(self.handle, ids)

    async def end(self, finish_reason: str) -> None:
        if not self.ended:
            self.stream.put_end(self.handle, finish_reason)

    def _take(self) -> pb.ExtractResponse | None:
        return self.pending.pop(0) if self.pending else None

    def _deliver(self, resp: pb.ExtractResponse) -> None:
        if not (self.pending and merge(self.pending[-1], resp)):
            self.pending.append(resp)
        if resp.finish_reason:
            self.ended = True
        self._wake()


class ExtractStream(MuxStream):
    """The multiplexed stream to one extractor pod, opened on first use and again after it
    broke."""

    ended_details = "the extractor stream ended"

    def __init__(self, stub, metadata) -> None:
        self.stub = stub
        self.metadata = metadata
        self.call = None
        self.connecting: asyncio.Future | None = None
        self.handles: dict[int, ExtractHandle] = {}
        self.ids = itertools.count(1)
        self._clear()
        self.has_mail = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    def _clear(self) -> None:
        self.starts: list[pb.ExtractStreamStart] = []
        self.tokens: dict[int, list[int]] = {}
        self.ends: list[pb.ExtractStreamEnd] = []
        self.cancels: list[int] = []

    async def open(self, setup: pb.ExtractSetup, request_id: str = "") -> ExtractHandle:
        """A new request on this stream. The first one waits for the stream's headers, so an
        unreachable pod fails it with UNAVAILABLE before any response starts."""
        if self.call is None:
            await self._connect()
        handle = ExtractHandle(self, next(self.ids))
        self.handles[handle.handle] = handle
        self.starts.append(
            pb.ExtractStreamStart(handle=handle.handle, setup=setup, request_id=request_id)
        )
        self.has_mail.set()
        return handle

    def put_tokens(self, handle: int, ids) -> None:
        pending = self.tokens.get(handle)
        if pending is None:
            self.tokens[handle] = list(ids)
        else:
            pending.extend(ids)
        self.has_mail.set()

    def put_end(self, handle: int, finish_reason: str) -> None:
        end = pb.ExtractStreamEnd(handle=handle)
        set_finish(end, finish_reason)
        self.ends.append(end)
        self.has_mail.set()

    def forget(self, handle: int, cancel: bool) -> None:
        if self.handles.pop(handle, None) is not None and cancel and self.call is not None:
            self.cancels.append(handle)
            self.has_mail.set()

    @property
    def load(self) -> int:
        return len(self.handles)

    # -- internals ---------------------------------------------------------------------
    async def _connect(self) -> None:
        if self.connecting is not None:  # another request is connecting: wait for it
            await asyncio.shield(self.connecting)
            return
        self.connecting = asyncio.get_running_loop().create_future()
        try:
            call = self.stub.ExtractStream(metadata=self.metadata)
            try:
                await call.wait_for_connection()
            except grpc.aio.AioRpcError:
                call.cancel()
                raise
            self.call = call
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
        if not (self.starts or self.tokens or self.ends or self.cancels):
            return None
        tokens = self.tokens
        msg = pb.ExtractStreamRequest(
            starts=self.starts,
            handles=tokens.keys(),
            counts=[len(t) for t in tokens.values()],
            token_ids=list(itertools.chain.from_iterable(tokens.values())),
            ends=self.ends,
            cancels=self.cancels,
        )
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
        handles = self.handles
        for h, resp in zip(frame.handles, frame.deltas):
            handle = handles.get(h)
            if handle is not None:
                if resp.finish_reason:
                    del handles[h]
                handle._deliver(resp)
        self._fail_each(frame.failures)


class ExtractCall:
    """The per-request Extract call (`--extractor-mux off`), behind the same methods."""

    __slots__ = ("call", "pod")

    def __init__(self, call, pod):
        self.call = call
        self.pod = pod  # counts its open calls (extractor_pool.py)

    @classmethod
    async def open(cls, stub, setup: pb.ExtractSetup, metadata, pod) -> ExtractCall:
        call = stub.Extract(metadata=metadata)
        await call.write(pb.ExtractRequest(setup=setup))
        return cls(call, pod)

    async def tokens(self, ids) -> None:
        await self.call.write(pb.ExtractRequest(tokens=pb.TokenChunk(token_ids=ids)))

    async def end(self, finish_reason: str) -> None:
        end = pb.ExtractEnd()
        set_finish(end, finish_reason)
        await self.call.write(pb.ExtractRequest(end=end))
        await self.call.done_writing()

    async def read(self):
        return await self.call.read()

    def cancel(self) -> None:
        """Idempotent: the orchestrator cancels every call of a request when it ends."""
        self.call.cancel()
        if self.pod is not None:
            self.pod.calls -= 1
            self.pod = None
