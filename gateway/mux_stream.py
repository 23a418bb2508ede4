"""What the gateway's two multiplexed streams share (decode_mux.py, extractor_mux.py): reading
frames until the stream ends, failing every request on a stream that broke, failing one
request from a frame's failure entry, and closing.

A subclass holds `call` (the open stream or None), `tasks` (its writer and reader) and
`handles` (open requests by handle, each with `_fail(error)`), and reads a frame into its
requests in `_dispatch`.
"""

from __future__ import annotations

import asyncio

import grpc

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def rpc_error(code: grpc.StatusCode, details: str, trailing=()) -> grpc.aio.AioRpcError:
    """The error a per-request call would have raised, so the orchestrator's paths stay one."""
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details
    )


class MuxStream:
    # the error's details when the server ends the stream cleanly
    ended_details = "the stream ended"

    call = None
    tasks: list[asyncio.Task]
    handles: dict

    def _dispatch(self, frame) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            call.cancel()
        for task in self.tasks:
            task.cancel()
        self._fail_all(rpc_error(grpc.StatusCode.UNAVAILABLE, "the gateway is closing"))

    async def _read(self, call) -> None:
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
            handle = self.handles.pop(f.handle, None)
            if handle is not None:
                handle._fail(
                    rpc_error(
                        _CODES.get(f.status_code, grpc.StatusCode.UNKNOWN),
                        f.details,
                        tuple(f.metadata.items()),
                    )
                )

    def _fail_all(self, error: BaseException) -> None:
        handles, self.handles = self.handles, {}
        for handle in handles.values():
            handle._fail(error)
