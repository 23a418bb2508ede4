"""The Responses API's routes: POST /v1/responses and the stored responses' GET, DELETE and
input_items.

A create is one more presentation of the one run path: the body (with the stored conversation
of `previous_response_id` before it) becomes a ChatCompletionRequest proto (to_chat.py), the
orchestrator admits, renders and runs it as it does a chat completion, and render.py writes the
run's events as a Response (streamed or not). A stored response is written before its terminal
event or its JSON body goes out, so a client that saw a response id can always continue from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pydantic
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from toolwire.errors import RequestError, invalid_value, unsupported, unsupported_value
from toolwire.vocabulary import ErrorCode

from .. import request_log
from ..orchestrator import Orchestrator
from .render import ResponseBuilder, new_id
from .request import ResponseCreateRequest
from .store import ResponseStore, StoredResponse, owner_of
from .to_chat import ENCRYPTED_REASONING, INCLUDABLE, Turn, encode_reasoning, to_chat

log = logging.getLogger("toolwire.gateway")
API = "responses"
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def _key(request: Request) -> str | None:
    header = request.headers.get("authorization") or ""
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def _not_found(response_id: str, param: str = "response_id") -> RequestError:
    return RequestError(
        f"No response with id '{response_id}' found.",
        param=param,
        code=ErrorCode.NOT_FOUND,
        status=404,
    )


def envelope(req: ResponseCreateRequest, turn: Turn, model: str) -> dict[str, Any]:
    """The request's settings as the Response object echoes them."""
    return {
        "model": model,
        "instructions": req.instructions,
        "tools": turn.tools,
        "tool_choice": turn.tool_choice,
        "parallel_tool_calls": turn.parallel_tool_calls,
        "text": turn.text,
        "reasoning": req.reasoning.model_dump(exclude_none=True) if req.reasoning else None,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature if req.temperature is not None else 1.0,
        "top_p": req.top_p if req.top_p is not None else 1.0,
        "truncation": req.truncation or "disabled",
        "metadata": req.metadata or {},
        "previous_response_id": req.previous_response_id,
        "store": req.store is not False,
        "user": req.user,
        "service_tier": "default",
    }


class ResponsesAPI:
    """The handlers, bound to the orchestrator, the store and the gateway's flags."""

    def __init__(
        self,
        orch: Orchestrator,
        store: ResponseStore,
        authorized,
        error_response,
        validation_error,
        read_json_object,
        event_stream,
        drop_hosted_tools: bool = False,
    ):
        self.orch = orch
        self.store = store
        self.authorized = authorized
        self.error_response = error_response
        self.validation_error = validation_error
        self.read_json_object = read_json_object
        self.event_stream = event_stream
        self.drop_hosted_tools = drop_hosted_tools

    # -- POST /v1/responses -----------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        orch, metrics = self.orch, self.orch.metrics
        rid, started = new_id("resp"), time.perf_counter()
        headers = {"x-request-id": rid}
        model, streamed = "", False

        def refused(e: RequestError) -> Response:
            metrics.count(API, e.status, e.code)
            request_log.write(
                request_id=rid,
                api=API,
                model=model,
                status=e.status,
                code=e.code,
                stream=streamed,
                started=started,
            )
            response = self.error_response(e)
            response.headers.update(headers)
            return response

        err = self.authorized(request)
        if err:
            return refused(err)
        owner = owner_of(_key(request))
        try:
            body = await self.read_json_object(request, orch.limits.max_body_bytes)
            model, streamed = str(body.get("model", "")), body.get("stream") is True
            try:
                req = ResponseCreateRequest.model_validate(body)
            except pydantic.ValidationError as e:
                raise self.validation_error(e, ResponseCreateRequest) from None
            history = await self._history(req, owner)
            # An item_reference names an item of the conversation it continues.
            known = {item["id"]: item for item in history if item.get("id")}
            proto, turn = to_chat(
                req,
                history,
                resolve_item=known.get,
                drop_hosted_tools=self.drop_hosted_tools,
                tool_format=orch.tool_format,
            )
            if turn.dropped_tools:
                log.info(
                    "left out hosted tools %s (--drop-hosted-tools)", ", ".join(turn.dropped_tools)
                )
            try:
                run = await orch.open(proto, rid)
            except RequestError as e:  # named as the chat request's: renamed to this body's
                raise turn.translate(e) from None
        except RequestError as e:
            return refused(e)
        builder = ResponseBuilder(
            rid,
            envelope(req, turn, req.model),
            turn.namespaces,
            encode_reasoning if turn.encrypted_reasoning else None,
        )
        input_items = input_items_of(req)
        if not req.stream:
            try:
                async for event in run.events():
                    builder.feed(event)
                await self._keep(req, owner, builder, input_items)
            except RequestError as e:
                return refused(e)
            finally:
                run.close()
            status = 200
            metrics.count(API, status)
            request_log.write(
                request_id=rid, api=API, model=model, status=status, started=started, run=run
            )
            return JSONResponse(builder.response(), headers=headers)

        async def events() -> AsyncIterator[bytes]:
            status, code = 200, None
            try:
                for e in builder.start():
                    yield _sse(e)
                async for event in run.events():
                    out = builder.feed(event)
                    if out and out[-1]["type"] in TERMINAL:
                        for e in out[:-1]:
                            yield _sse(e)
                        await self._keep(req, owner, builder, input_items)  # before the end
                        yield _sse(out[-1])
                    else:
                        for e in out:
                            yield _sse(e)
                if builder.status == "failed":
                    status, code = 500, (builder.error or {}).get("code")
            except (GeneratorExit, asyncio.CancelledError):
                status, code = 499, "client_disconnected"
                metrics.client_disconnects.labels(orch.model_id).inc()
                raise
            except RequestError as e:  # the store refused it: the stream ends failed, loudly
                status, code = e.status, e.code
                for ev_ in builder.fail(e):
                    yield _sse(ev_)
            except Exception:  # never hang a stream: end it failed
                log.exception("responses stream failed")
                status, code = 500, "internal_error"
                for ev_ in builder.fail(
                    RequestError("internal error", status=500, type="server_error")
                ):
                    yield _sse(ev_)
            finally:
                run.close()
                metrics.count(API, status, code)
                request_log.write(
                    request_id=rid,
                    api=API,
                    model=model,
                    status=status,
                    code=code,
                    stream=True,
                    started=started,
                    run=run,
                )

        return self.event_stream(events(), run, headers)

    async def _history(self, req: ResponseCreateRequest, owner: str) -> list[dict]:
        """The stored conversation `previous_response_id` continues: each turn's input items and
        output, oldest first."""
        if not req.previous_response_id:
            return []
        chain = await self.store.chain(req.previous_response_id, owner)
        if chain is None:
            raise _not_found(req.previous_response_id, "previous_response_id")
        items: list[dict] = []
        for stored in chain:
            items += stored.input_items
            items += stored.output
        return items

    async def _keep(
        self,
        req: ResponseCreateRequest,
        owner: str,
        builder: ResponseBuilder,
        input_items: list[dict],
    ) -> None:
        """Store the finished response (store defaults to true), before the client hears it
        ended. A failed run is not kept: there is nothing to continue from."""
        if req.store is False or builder.status == "failed":
            return
        await self.store.put(
            StoredResponse(
                id=builder.id,
                owner=owner,
                created_at=builder.created_at,
                previous_response_id=req.previous_response_id,
                input_items=input_items,
                output=builder.output,
                response=builder.response(),
            )
        )

    # -- stored responses -------------------------------------------------------------------
    async def by_id(self, request: Request) -> Response:
        """GET or DELETE /v1/responses/{id}."""
        if request.method == "DELETE":
            return await self.delete(request)
        return await self.retrieve(request)

    async def retrieve(self, request: Request) -> Response:
        err = self.authorized(request)
        if err:
            return self.error_response(err)
        rid = request.path_params["response_id"]
        try:
            encrypted = retrieve_query(request.query_params)
            stored = await self.store.get(rid, owner_of(_key(request)))
        except RequestError as e:  # a query toolwire cannot honor; the database unreachable
            return self.error_response(e)
        if stored is None:
            return self.error_response(_not_found(rid))
        body = with_encrypted_reasoning(stored.response) if encrypted else stored.response
        return JSONResponse(body)

    async def delete(self, request: Request) -> Response:
        err = self.authorized(request)
        if err:
            return self.error_response(err)
        rid = request.path_params["response_id"]
        try:
            deleted = await self.store.delete(rid, owner_of(_key(request)))
        except RequestError as e:
            return self.error_response(e)
        if not deleted:
            return self.error_response(_not_found(rid))
        return JSONResponse({"id": rid, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        err = self.authorized(request)
        if err:
            return self.error_response(err)
        rid = request.path_params["response_id"]
        q = request.query_params
        try:
            included(q)  # the items are listed as sent: nothing to add, but a bad value is a 400
        except RequestError as e:
            return self.error_response(e)
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            return self.error_response(
                RequestError(
                    "limit must be an integer from 1 to 100",
                    param="limit",
                    code=ErrorCode.INVALID_VALUE,
                )
            )
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            return self.error_response(
                RequestError(
                    "order must be 'asc' or 'desc'", param="order", code=ErrorCode.INVALID_VALUE
                )
            )
        try:
            found = await self.store.list_input_items(
                rid, owner_of(_key(request)), after=q.get("after"), limit=limit, order=order
            )
        except RequestError as e:
            return self.error_response(e)
        if found is None:
            return self.error_response(_not_found(rid))
        items, has_more = found
        return JSONResponse(
            {
                "object": "list",
                "data": items,
                "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None,
                "has_more": has_more,
            }
        )


def input_items_of(req: ResponseCreateRequest) -> list[dict[str, Any]]:
    """This turn's input as stored and listed: a string is one user message, a message's
    string content one text part; every item gets an id (a message `msg_`, others their own
    or one made for them)."""
    if isinstance(req.input, str):
        return [
            {
                "id": new_id("msg"),
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": req.input}],
            }
        ]
    items = []
    for item in req.input or []:
        d = item.model_dump(exclude_none=True, by_alias=True)
        d.setdefault("type", "message")
        if d["type"] == "message" and isinstance(d.get("content"), str):
            # Listed as OpenAI lists it: an easy message's string becomes one text part.
            part = "output_text" if d.get("role") == "assistant" else "input_text"
            d["content"] = [{"type": part, "text": d["content"]}]
        if not d.get("id"):
            d["id"] = new_id(
                {"message": "msg", "function_call_output": "fco"}.get(d["type"], "item")
            )
        items.append(d)
    return items


def included(query: QueryParams) -> list[str]:
    """The `include` values of a GET's query (the SDK writes `include[]=...`), checked as a
    create checks its body's: logprobs refused, an unknown name a 400."""
    names = [*query.getlist("include[]"), *query.getlist("include")]
    for i, name in enumerate(names):
        if name == "message.output_text.logprobs":
            raise unsupported_value(f"include[{i}]", "logprobs are not supported")
        if name not in INCLUDABLE:
            raise invalid_value(f"include[{i}]", f"{name!r} is not a known includable")
    return names


def retrieve_query(query: QueryParams) -> bool:
    """GET /v1/responses/{id}'s query; returns whether reasoning.encrypted_content is asked for.
    `stream=true` (with `starting_after`) replays a response's events, which OpenAI keeps for
    background responses and toolwire, which has none, does not: refused by name, where a JSON
    body would reach the SDK's `retrieve(stream=True)` as an empty stream."""
    if query.get("stream", "false").lower() != "false":
        raise unsupported(
            "stream",
            "streaming a stored response is not supported (toolwire keeps no event streams: "
            "there are no background responses); retrieve it without stream",
        )
    if "starting_after" in query:
        raise unsupported(
            "starting_after",
            "starting_after is only allowed when stream is true, which is not supported here",
        )
    return ENCRYPTED_REASONING in included(query)


def with_encrypted_reasoning(response: dict[str, Any]) -> dict[str, Any]:
    """A stored response with each reasoning item's `encrypted_content`, as the create would
    have written it had `include` asked for it (the same text: the item's content)."""
    output = []
    for item in response.get("output") or []:
        if item.get("type") == "reasoning" and not item.get("encrypted_content"):
            text = "".join(part.get("text", "") for part in item.get("content") or [])
            item = item | {"encrypted_content": encode_reasoning(text)}
        output.append(item)
    return response | {"output": output}


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
