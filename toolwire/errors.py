"""Request errors that carry the OpenAI error shape across gRPC hops."""

from __future__ import annotations

import grpc

# Trailing-metadata keys that carry the OpenAI `param` and `code` of an error between services.
PARAM_KEY = "toolwire-param"
CODE_KEY = "toolwire-code"


class RequestError(Exception):
    """A client error: becomes a 400 (or `status`) with an OpenAI error body."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400, type: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type


_GRPC_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_STATUS_BY_GRPC = {v: k for k, v in _GRPC_BY_STATUS.items()}
_STATUS_BY_GRPC[grpc.StatusCode.CANCELLED] = 499
_STATUS_BY_GRPC[grpc.StatusCode.DEADLINE_EXCEEDED] = 504


async def abort_with(context: grpc.aio.ServicerContext, err: RequestError) -> None:
    """Abort a gRPC call so that the caller can rebuild the same RequestError."""
    md = []
    if err.param:
        md.append((PARAM_KEY, err.param))
    if err.code:
        md.append((CODE_KEY, err.code))
    context.set_trailing_metadata(tuple(md))
    await context.abort(_GRPC_BY_STATUS.get(err.status, grpc.StatusCode.INTERNAL), err.message)


def from_rpc_error(e: grpc.aio.AioRpcError, service: str) -> RequestError:
    """Rebuild the error a downstream service raised; unknown faults are 500s."""
    md = {k: v for k, v in (e.trailing_metadata() or ())}
    status = _STATUS_BY_GRPC.get(e.code(), 500)
    if status == 500 or e.code() == grpc.StatusCode.UNAVAILABLE:
        type_ = "server_error" if status == 500 else "service_unavailable"
        return RequestError(f"{service} service: {e.details()}", status=status, type=type_)
    return RequestError(e.details() or "", param=md.get(PARAM_KEY), code=md.get(CODE_KEY),
                        status=status)
