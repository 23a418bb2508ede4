"""What the gateway's two long-lived streams share (generate_stream.py, extract_stream.py): a
request's entry on a stream (its `handle` is the int the protos carry), reading frames until the
stream ends, failing every request on a stream that broke, failing one request from a frame's
failure entry, and closing.

A stream subclass holds `call` (the open stream or None), `tasks` (its writer and reader) and
`entries` (open requests by handle, each with `_fail(error)`), and reads a frame into its
requests in `_dispatch`. Errors are the `AioRpcError` a per-request call would have raised, so
the run's error paths are the ones a per-request call has.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def rpc_error(code: grpc.StatusCode, details: str, trailing=()) -> grpc.aio.AioRpcError:
    """The error a per-request call would have raised, so the run's error paths stay one."""
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


class StreamEntry:
    """One request on a stream: `read()` gives what `_take()` has ready, waits when nothing is,
    raises the request's error, then grpc.aio.EOF."""

    __slots__ = ("stream", "handle", "error", "ended", "waiter")

    def __init__(self, stream: StreamBase, handle: int):
        self.stream = stream
        self.handle = handle
        self.error: BaseException | None = None
        self.ended = False  # finished, failed or cancelled: nothing more comes
        self.waiter: asyncio.Future | None = None

    def _take(self):
        """The next thing delivered and not yet read, or None."""
        raise NotImplementedError

    async def read(self):
        while True:
            ready = self._take()
            if ready is not None:
                return ready
            if self.error is not None:
                raise self.error
            if self.ended:
                return grpc.aio.EOF
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def cancel(self) -> None:
        """Stop the request (the client left, or it is over): the service ends it too."""
        if self.ended:
            return
        self.ended = True
        self.stream.forget(self.handle, cancel=True)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.ended = True
        self._wake()


class StreamBase:
    # the error's details when the server ends the stream cleanly
    ended_details = "the stream ended"

    call: grpc.aio.StreamStreamCall | None = None
    tasks: list[asyncio.Task]
    entries: dict[int, Any]

    def _dispatch(self, frame) -> None:
        raise NotImplementedError

    def forget(self, handle: int, cancel: bool) -> None:
        """Drop `handle` (cancel: and tell the service to end it)."""
        raise NotImplementedError

    async def close(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            call.cancel()
        for task in self.tasks:
            task.cancel()
        self._fail_all(rpc_error(grpc.StatusCode.UNAVAILABLE, "the gateway is closing"))

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        error: BaseException
        try:
            while True:
                frame = await call.read()
                if frame is grpc.aio.EOF:
                    break
                self._dispatch(frame)
            code = await call.code()
            error = rpc_error(
                code if code != grpc.StatusCode.OK else grpc.StatusCode.UNAVAILABLE,
                await call.details() or self.ended_details,
                tuple(await call.trailing_metadata() or ()),
            )
        except grpc.aio.AioRpcError as e:
            error = e
            if e.code() == grpc.StatusCode.INTERNAL and e.details() == "Internal error from Core":
                # A write raced the other side ending the stream: the stream ended, nothing
                # the request did; as UNAVAILABLE it is retried like any stream that ended.
                error = rpc_error(grpc.StatusCode.UNAVAILABLE, self.ended_details)
        except asyncio.CancelledError:
            if self.call is call:
                self.call = None
            raise
        if self.call is call:
            self.call = None
            for task in self.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            self._fail_all(error)

    def _fail_each(self, failures) -> None:
        """A frame's per-request failures (handle, status_code, details, metadata)."""
        for f in failures:
            entry = self.entries.pop(f.handle, None)
            if entry is not None:
                entry._fail(
                    rpc_error(
                        _CODES.get(f.status_code, grpc.StatusCode.UNKNOWN),
                        f.details,
                        tuple(f.metadata.items()),
                    )
                )

    def _fail_all(self, error: BaseException) -> None:
        entries, self.entries = self.entries, {}
        for entry in entries.values():
            entry._fail(error)

    @property
    def load(self) -> int:
        """Requests of this gateway open on the stream (replicas.py picks the least loaded)."""
        return len(self.entries)
