"""What both decode RPCs (Generate, and each request on GenerateStream) do before the engine
runs a request, and how the engine's refusals become RequestErrors: one place, so the two
paths refuse alike."""

from __future__ import annotations

import logging

from toolwire.constraints.kinds import Constraint
from toolwire.errors import RequestError, overloaded, unavailable
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.vocabulary import ErrorCode

from .engine import Engine, EngineBusy, EngineRequest, EngineRequestError

log = logging.getLogger("toolwire.decode")


def engine_request(r: pb.GenerateRequest) -> EngineRequest:
    return EngineRequest(
        request_id=r.request_id,
        prompt_ids=list(r.prompt_token_ids),
        max_tokens=r.max_tokens,
        stop_ids=list(r.stop_token_ids),
        temperature=r.sampling.temperature,
        top_p=r.sampling.top_p,
        seed=r.sampling.seed if r.sampling.HasField("seed") else None,
        constraint=Constraint.from_proto(r.constraint),
    )


def admit(engine: Engine, max_queue: int, request: pb.GenerateRequest) -> None:
    """Raise the RequestError a request is refused with before it reaches the engine."""
    if not request.request_id:
        raise RequestError("request_id is required", "request_id")
    # The bounded queue in front of the engine: beyond its slots and max_queue waiting,
    # refuse at once (the gateway answers 429 with Retry-After) instead of holding memory.
    waiting = engine.active_requests() - engine.info.max_batch
    if waiting >= max_queue:
        raise overloaded(
            f"the decode queue is full ({waiting} requests waiting for a slot); retry shortly",
            code=ErrorCode.QUEUE_FULL,
        )


def request_error(exc: BaseException) -> RequestError:
    """The RequestError the caller gets for what the engine raised."""
    if isinstance(exc, EngineRequestError):
        return RequestError(str(exc), exc.param)
    if isinstance(exc, EngineBusy):
        return unavailable(str(exc), code=ErrorCode.QUEUE_TIMEOUT)
    if isinstance(exc, RequestError):
        return exc
    log.error("a decode request failed: %r", exc)
    return RequestError("the decode engine failed", status=500, type="server_error")
