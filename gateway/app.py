"""The OpenAI REST surface: /v1/chat/completions, /v1/models, /health, /metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import types
import typing
import weakref
from typing import Any

import orjson
import pydantic
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from toolwire.errors import RequestError
from toolwire.vocabulary import ErrorCode

from . import request_log
from .auth import Auth
from .chat_render import chat_completion, chat_sse
from .openai_models import ChatCompletionRequest
from .openapi import openapi_document
from .orchestrator import Orchestrator, new_request_id
from .responses.routes import ResponsesAPI
from .responses.store import ResponseStore
from .rest_to_proto import to_proto
from .wire import completion_dict

log = logging.getLogger("toolwire.gateway")


def error_body(e: RequestError) -> dict:
    return {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}}


def error_response(e: RequestError) -> JSONResponse:
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
    return JSONResponse(error_body(e), status_code=e.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 once it passes `limit` bytes (before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise _too_large(len(body), limit)
    return bytes(body)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: read_body's 413, then a 400 for anything else than one."""
    raw = await read_body(request, limit)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    return body


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        f"The request body is {size} bytes or more; the limit is {limit} bytes.",
        status=413,
        code=ErrorCode.REQUEST_TOO_LARGE,
    )


def _union_members(tp: Any) -> list[Any]:
    """A type's alternatives, None left out: one for a plain or optional type, several for a
    union (where pydantic puts the alternative it tried into an error's location)."""
    if typing.get_origin(tp) is typing.Annotated:
        return _union_members(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) if a is not type(None) for m in _union_members(a)]
    return [tp]


def _tag_member(members: list[Any], tag: str) -> Any:
    """The alternative a union tag names: a model by its class name, a list or dict by its
    kind; a scalar (str, a Literal) is a leaf, None."""
    for m in members:
        if isinstance(m, type) and issubclass(m, pydantic.BaseModel) and m.__name__ == tag:
            return m
        origin = typing.get_origin(m)
        if origin in (list, dict) and tag.startswith(f"{origin.__name__}["):
            return m
    return None


def _step(node: Any, part: str | int) -> Any:
    """The type below `node` at a location part: a model's field, a list's item, a dict's
    value (None where the location leaves the models)."""
    origin = typing.get_origin(node)
    if isinstance(part, int):
        return typing.get_args(node)[0] if origin is list else None
    if origin is dict:
        return typing.get_args(node)[1]
    if isinstance(node, type) and issubclass(node, pydantic.BaseModel):
        for name, field in node.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
    return None


def _param(loc: tuple, model: type[pydantic.BaseModel] = ChatCompletionRequest) -> str:
    """The parameter a pydantic error location names, in OpenAI's `a.b[0].c` form. The location
    is walked along the request's models: where the type there is a union, pydantic's part is
    the alternative it tried (a class name, `str`, `literal[...]`), not a parameter, and is
    left out."""
    out = ""
    node: Any = model
    for part in loc:
        members = _union_members(node) if node is not None else []
        if len(members) > 1:
            node = _tag_member(members, str(part))
            continue
        node = members[0] if members else None
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
        node = _step(node, part) if node is not None else None
    return out


def validation_error(
    e: pydantic.ValidationError, model: type[pydantic.BaseModel] = ChatCompletionRequest
) -> RequestError:
    first = e.errors()[0]
    param = _param(first["loc"], model)
    return RequestError(
        f"Invalid value for '{param}': {first['msg']}",
        param=param,
        code=ErrorCode.INVALID_VALUE
        if first["type"] != "missing"
        else ErrorCode.MISSING_REQUIRED_PARAMETER,
    )


def event_stream(body, run, headers: dict[str, str]) -> EventStream:
    """An SSE response of `body`. A client gone before the first write leaves the generator
    unstarted, so its finally never runs: the run is closed (its decode slot and in-flight place
    freed) when the generator is collected."""
    weakref.finalize(body, run.close)
    return EventStream(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


def build_app(
    orch: Orchestrator, auth: Auth, store: ResponseStore, drop_hosted_tools: bool = False
):
    """The ASGI app: Starlette's routes, with the server's own `send` kept for EventStream."""
    metrics = orch.metrics
    in_flight = metrics.in_flight.labels(orch.model_id)
    in_flight.set_function(lambda: orch.in_flight)

    def authorized(request: Request) -> RequestError | None:
        return auth.check(request.headers.get("authorization"))

    async def chat_completions(request: Request) -> Response:
        # The id names the request everywhere: the response's x-request-id header, its
        # completion id, the JSON log line, the services' log lines (via gRPC metadata).
        rid, started = new_request_id(), time.perf_counter()
        headers = {"x-request-id": rid}
        model, streamed = "", False

        def refused(e: RequestError) -> Response:
            metrics.count("rest", e.status, e.code)
            request_log.write(
                request_id=rid,
                api="rest",
                model=model,
                status=e.status,
                code=e.code,
                stream=streamed,
                started=started,
            )
            response = error_response(e)
            response.headers.update(headers)
            return response

        err = authorized(request)
        if err:
            return refused(err)
        try:
            body = await read_json_object(request, orch.limits.max_body_bytes)
            model, streamed = str(body.get("model", "")), body.get("stream") is True
            try:
                req = ChatCompletionRequest.model_validate(body)
            except pydantic.ValidationError as e:
                raise validation_error(e) from None
            run = await orch.open(to_proto(req), rid)
            if not req.stream:
                result = completion_dict(await chat_completion(run))
                metrics.count("rest", 200)
                request_log.write(
                    request_id=rid, api="rest", model=model, status=200, started=started, run=run
                )
                return JSONResponse(result, headers=headers)
        except RequestError as e:
            return refused(e)

        async def events():
            status, code = 200, None
            try:
                async for event in chat_sse(run):
                    yield event
            except (GeneratorExit, asyncio.CancelledError):
                # The client went away (the write failed): the run's finally aborts decoding.
                status, code = 499, "client_disconnected"
                metrics.client_disconnects.labels(orch.model_id).inc()
                raise
            except RequestError as e:
                status, code = e.status, e.code
                yield f"data: {json.dumps(error_body(e))}\n\n".encode()
            except Exception:  # never hang a stream: end it with an error event
                log.exception("stream failed")
                status, code = 500, "internal_error"
                yield (
                    "data: "
                    + json.dumps(
                        error_body(RequestError("internal error", status=500, type="server_error"))
                    )
                    + "\n\n"
                ).encode()
            finally:
                run.close()
                metrics.count("rest", status, code)
                request_log.write(
                    request_id=rid,
                    api="rest",
                    model=model,
                    status=status,
                    code=code,
                    stream=True,
                    started=started,
                    run=run,
                )

        return event_stream(events(), run, headers)

    async def models(request: Request) -> Response:
        err = authorized(request)
        if err:
            return error_response(err)
        now = int(time.time())
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": now, "owned_by": "toolwire"}
                    for name in orch.names
                ],
            }
        )

    async def model(request: Request) -> Response:
        err = authorized(request)
        if err:
            return error_response(err)
        name = request.path_params["name"]
        if name not in orch.names:
            return error_response(
                RequestError(
                    f"The model `{name}` does not exist", "model", ErrorCode.MODEL_NOT_FOUND, 404
                )
            )
        return JSONResponse(
            {"id": name, "object": "model", "created": int(time.time()), "owned_by": "toolwire"}
        )

    async def health(request: Request) -> Response:
        services, replicas = await orch.healthy()
        ok = all(services.values())
        body = {
            "status": "ok" if ok else "unavailable",
            "services": services,
            "decode_replicas": len(replicas),
            "decode_replicas_serving": sum(replicas.values()),
            "models": orch.names,
        }
        if ok:
            body["decode_active_requests"] = await orch.decode_load()
        return JSONResponse(body, status_code=200 if ok else 503)

    document = openapi_document(orch.limits)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc) -> Response:
        return error_response(
            RequestError(f"Unknown path {request.url.path}", status=404, code=ErrorCode.NOT_FOUND)
        )

    async def method_not_allowed(request: Request, exc) -> Response:
        # OpenAI's wording; the Allow header is the matched route's (RFC 9110).
        response = error_response(
            RequestError(
                f"Invalid method for URL ({request.method} {request.url.path})", status=405
            )
        )
        allow = (getattr(exc, "headers", None) or {}).get("Allow")
        if allow:
            response.headers["Allow"] = allow
        return response

    responses = ResponsesAPI(
        orch,
        store,
        authorized,
        error_response,
        validation_error,
        read_json_object,
        event_stream,
        drop_hosted_tools,
    )
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/responses", responses.create, methods=["POST"]),
            # One route for both methods, so a 405 there names both in Allow.
            Route("/v1/responses/{response_id}", responses.by_id, methods=["GET", "DELETE"]),
            Route(
                "/v1/responses/{response_id}/input_items", responses.input_items, methods=["GET"]
            ),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{name:path}", model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "http":
            scope[RAW_SEND] = send  # for EventStream's body writes
        await app(scope, receive, send)

    return asgi


RAW_SEND = "toolwire.raw_send"


class EventStream(StreamingResponse):
    """A StreamingResponse whose events go straight to the server's `send`, not through
    Starlette's two exception-handling wrappers of it (each an async call per event; they act
    on the response's start only, which still goes through them, so an error before it is
    still theirs to answer)."""

    async def __call__(self, scope, receive, send) -> None:
        self.raw_send = scope.get(RAW_SEND, send)
        await super().__call__(scope, receive, send)

    async def stream_response(self, send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        raw = self.raw_send
        async for chunk in self.body_iterator:
            await raw({"type": "http.response.body", "body": chunk, "more_body": True})
        await raw({"type": "http.response.body", "body": b"", "more_body": False})
