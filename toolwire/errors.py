"""Request errors that carry the OpenAI error shape across gRPC hops."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from toolwire.vocabulary import ErrorCode

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("toolwire.gateway")

# Trailing-metadata keys that carry the OpenAI `param` and `code` of an error between services.
PARAM_KEY = "toolwire-param"
CODE_KEY = "toolwire-code"
RETRY_KEY = "retry-after"


class RequestError(Exception):
    """A client error: becomes a 400 (or `status`) with an OpenAI error body."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: ErrorCode | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type
        # Seconds a client should wait before trying again (429 and 503: Retry-After).
        self.retry_after = retry_after


def invalid_value(param: str, why: str) -> RequestError:
    """400: the parameter is present and wrong; the message names it."""
    return RequestError(
        f"Invalid value for '{param}': {why}", param=param, code=ErrorCode.INVALID_VALUE
    )


def unsupported(param: str, why: str) -> RequestError:
    """400: a parameter toolwire does not serve (it would be ignored or half-served)."""
    return RequestError(why, param=param, code=ErrorCode.UNSUPPORTED_PARAMETER)


def unsupported_value(param: str, why: str) -> RequestError:
    """400: a value of a parameter toolwire serves, that it does not."""
    return RequestError(why, param=param, code=ErrorCode.UNSUPPORTED_VALUE)


def overloaded(message: str, code: ErrorCode, retry_after: int = 1) -> RequestError:
    """429: the request was refused before any work, because too much is queued."""
    return RequestError(
        message, code=code, status=429, type="rate_limit_error", retry_after=retry_after
    )


def unavailable(
    message: str, code: ErrorCode = ErrorCode.SERVICE_UNAVAILABLE, retry_after: int = 2
) -> RequestError:
    """503: a service the request needs is down (or timed out waiting); try again later."""
    return RequestError(
        message, code=code, status=503, type="service_unavailable", retry_after=retry_after
    )


@functools.cache
def _status_maps() -> tuple[dict, dict]:
    """(gRPC code by HTTP status, HTTP status by gRPC code); grpc loads with the first error
    that crosses a hop, so that what imports this module alone (the launcher's flags, through
    the request limits) does not load it."""
    import grpc

    by_status = {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        401: grpc.StatusCode.UNAUTHENTICATED,
        404: grpc.StatusCode.NOT_FOUND,
        429: grpc.StatusCode.RESOURCE_EXHAUSTED,
        503: grpc.StatusCode.UNAVAILABLE,
    }
    by_code = {v: k for k, v in by_status.items()}
    by_code[grpc.StatusCode.CANCELLED] = 499
    by_code[grpc.StatusCode.DEADLINE_EXCEEDED] = 504
    return by_status, by_code


def grpc_status(err: RequestError) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The status and trailing metadata that carry `err` to a caller (from_rpc_error reads
    them back): a call's abort, or a failure entry on a multiplexed stream."""
    md = []
    if err.param:
        md.append((PARAM_KEY, err.param))
    if err.code:
        md.append((CODE_KEY, str(err.code)))
    if err.retry_after is not None:
        md.append((RETRY_KEY, str(err.retry_after)))
    import grpc

    return _status_maps()[0].get(err.status, grpc.StatusCode.INTERNAL), tuple(md)


async def abort_with(context: grpc.aio.ServicerContext, err: RequestError) -> None:
    """Abort a gRPC call so that the caller can rebuild the same RequestError."""
    code, md = grpc_status(err)
    context.set_trailing_metadata(md)
    await context.abort(code, err.message)


def from_rpc_error(e: grpc.aio.AioRpcError, service: str) -> RequestError:
    """Rebuild the error a downstream service raised; unknown faults are 500s."""
    md = {k: v for k, v in (e.trailing_metadata() or ())}
    import grpc

    status = _status_maps()[1].get(e.code(), 500)
    retry = md.get(RETRY_KEY)
    retry_after = int(retry) if retry and retry.isdigit() else None
    if status == 500:
        log.error("the %s service failed: %s: %s", service, e.code().name, e.details())
        return RequestError(f"the {service} service failed", status=500, type="server_error")
    if status == 401:  # our own credentials were refused: a deployment fault, not the client's
        return RequestError(
            f"the {service} service refused the gateway's internal credentials (token or TLS)",
            status=500,
            type="server_error",
        )
    if e.code() == grpc.StatusCode.UNAVAILABLE and CODE_KEY not in md:
        # The service itself is unreachable (down, restarting): not the request's fault. Its
        # details name internal addresses: logged here, not sent to the client.
        log.warning("the %s service is unavailable: %s", service, e.details())
        return unavailable(
            f"the {service} service is unavailable; retry shortly", retry_after=retry_after or 2
        )
    if status in (429, 503) and retry_after is None:
        retry_after = 1
    param = md.get(PARAM_KEY)
    # gRPC gives bytes only for binary ("-bin") keys; PARAM_KEY is a text key.
    assert not isinstance(param, bytes), "a text metadata key carries a str"
    return RequestError(
        e.details() or "",
        param=param,
        code=_error_code(md.get(CODE_KEY)),
        status=status,
        type=_TYPE_BY_STATUS.get(status, "invalid_request_error"),
        retry_after=retry_after,
    )


def _error_code(code: str | bytes | None) -> ErrorCode | None:
    """A code read from trailing metadata as its member. A code this build does not know (a
    newer service's) passes on as the string it is, so the client still gets it."""
    if not code:
        return None
    if isinstance(code, bytes):
        code = code.decode()
    try:
        return ErrorCode(code)
    except ValueError:
        return code  # type: ignore[return-value]


_TYPE_BY_STATUS = {
    401: "authentication_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}
