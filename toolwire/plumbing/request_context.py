"""The request id across services: the gateway sends it in every call's gRPC metadata, each
service binds it for the call, and every log line written meanwhile carries it."""

from __future__ import annotations

import contextvars
import logging

REQUEST_ID_KEY = "x-request-id"
# Names a gateway's ExtractStream on an extractor pod, so that a decode replica's PushTokens can
# deliver a request's tokens into it (decode.proto's ExtractRoute).
SESSION_KEY = "toolwire-session"
_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def bind(context) -> str:
    """Take the request id from a gRPC call's metadata (servicer methods call this first)."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            _current.set(value)
            return value
    return ""


def bind_id(request_id: str) -> None:
    """Bind an id carried in the message itself (a request on a multiplexed stream), for the
    rest of the current task."""
    _current.set(request_id)


class RequestIdFilter(logging.Filter):
    """Adds ` [<request id>]` to a record logged while a request is bound (else nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = _current.get()
        record.request_id = f" [{rid}]" if rid else ""
        return True
