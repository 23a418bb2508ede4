"""The one orchestration path: template -> decode -> extractor, for REST and gRPC alike.

`open` renders the prompt and waits for the first generated token (or the first error), so a bad
request fails as a plain error before any stream starts; `Run.chunks` then yields
ChatCompletionChunk protos in OpenAI's stream order.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jsonschema

from toolwire.errors import CODE_KEY, RequestError, from_rpc_error, overloaded, unavailable
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2
from toolwire.grpc_gen.extractor.v1 import extractor_pb2
from toolwire.grpc_gen.template.v1 import template_pb2, template_pb2_grpc
from toolwire.plumbing.grpc_server import check_serving
from toolwire.plumbing.internal_security import ClientSecurity
from toolwire.plumbing.request_context import REQUEST_ID_KEY
from toolwire.request.checks import check_chat_request
from toolwire.request.from_proto import choice_from_proto
from toolwire.request.limits import Limits, completion_budget
from toolwire.vocabulary import ErrorCode, FinishReason
from toolwire.wire_enums import set_finish

from .decode_mux import DecodeHandle
from .decode_pool import DecodePool, Replica
from .extractor_mux import ExtractHandle
from .extractor_pool import ExtractorPool
from .metrics import Metrics
from .resolve import round_robin_target, split


class Orchestrator:
    def __init__(
        self,
        template: str | list[str],
        decode: str | list[str],
        extractor: str | list[str],
        served_names: list[str],
        metrics: Metrics,
        limits: Limits | None = None,
        security: ClientSecurity | None = None,
        decode_mux: bool = True,
        stream_interval: tuple[int, int] = (0, 0),
        extractor_mux: bool = True,
    ):
        self.template_addresses = split(template)
        self.extractor_addresses = split(extractor)
        self.decode_addresses = [decode] if isinstance(decode, str) else list(decode)
        self.extra_names = served_names
        self.metrics = metrics
        self.limits = limits or Limits()
        self.security = security or ClientSecurity()
        self.decode_mux = decode_mux  # one GenerateStream per replica (decode_mux.py)
        # (tokens, ms): --stream-interval and --stream-interval-ms, held in the decode mux
        self.stream_interval = stream_interval
        self.extractor_mux = extractor_mux  # one ExtractStream per pod (extractor_mux.py)
        self.model_id = ""
        self.names: list[str] = []
        self.max_model_len = 0
        self.in_flight = 0  # requests between open() and the end of their stream

    async def connect(self) -> None:
        # Template calls are unary: gRPC's round_robin spreads them over every address the
        # target resolves to (a headless Service's pods, or the list given).
        self.channels = {
            "template": self.security.channel(
                round_robin_target(self.template_addresses),
                (("grpc.lb_policy_name", "round_robin"),),
            )
        }
        md = self.security.metadata
        self.template = template_pb2_grpc.TemplateServiceStub(self.channels["template"])
        self.decode = DecodePool(self.decode_addresses, self.security)
        await self.decode.start()
        self.extractor = ExtractorPool(self.extractor_addresses, self.security, self.extractor_mux)
        await self.extractor.start()
        info = await self.template.GetModelInfo(
            common.GetModelInfoRequest(), metadata=md, wait_for_ready=True, timeout=600
        )
        self.model_id = info.model_id
        self.max_model_len = info.max_model_len
        self.metrics.init_model(self.model_id)
        self.tool_format = info.tool_format
        self.names = [self.model_id] + [n for n in self.extra_names if n != self.model_id]

    async def close(self) -> None:
        await self.decode.close()
        await self.extractor.close()
        for ch in self.channels.values():
            await ch.close()

    async def healthy(self) -> tuple[dict[str, bool], dict[str, bool]]:
        """(each service serving?, each decode replica serving?); decode serves while any
        replica does."""
        template, extractor, replicas = await asyncio.gather(
            check_serving(self.channels["template"]), self.extractor.check(), self.decode.check()
        )
        services = {"template": template, "extractor": extractor}
        services["decode"] = any(replicas.values())
        return services, replicas

    async def decode_load(self) -> int:
        """Requests holding a decode slot now, over the serving replicas (for /health)."""
        infos = await asyncio.gather(
            *(
                r.stub.GetModelInfo(
                    common.GetModelInfoRequest(), timeout=2, metadata=self.security.metadata
                )
                for r in self.decode.replicas.values()
                if r.healthy
            )
        )
        return sum(i.active_requests for i in infos)

    def strict_validator(self, tools, name: str):
        """A JSON Schema validator for the strict tool `name`, cached by schema text."""
        for t in tools:
            if t.name == name and t.strict:
                return _validator(t.parameters_json or "{}")
        return None

    def call_metadata(self, request_id: str) -> tuple[tuple[str, str], ...]:
        """Metadata of every internal call: the request id (for the services' logs), the
        internal token."""
        return ((REQUEST_ID_KEY, request_id),) + (self.security.metadata or ())

    async def open(self, req: chat_pb2.ChatCompletionRequest, request_id: str | None = None) -> Run:
        """Render, start decoding and wait for the first token. The returned Run holds one of
        the gateway's in-flight places until its stream ends (`Run.chunks`' finally)."""
        request_id = request_id or new_request_id()
        if req.model not in self.names:
            raise RequestError(
                f"The model `{req.model}` does not exist. Served: {', '.join(self.names)}",
                param="model",
                code=ErrorCode.MODEL_NOT_FOUND,
                status=404,
            )
        check_chat_request(req, self.limits)
        if req.stream_interval.tokens > 1 and not self.decode_mux:
            raise RequestError(
                "stream_interval needs the gateway's multiplexed decode stream "
                "(--decode-mux on); this gateway runs one call per request",
                param="stream_interval",
                code=ErrorCode.UNSUPPORTED_PARAMETER,
            )
        if self.in_flight >= self.limits.max_concurrent_requests:
            raise overloaded(
                f"the server has {self.in_flight} requests in flight, its limit; retry shortly",
                code=ErrorCode.TOO_MANY_REQUESTS,
            )
        self.in_flight += 1
        try:
            return await self._open(req, request_id)
        except BaseException:
            self.in_flight -= 1
            raise

    async def _open(self, req: chat_pb2.ChatCompletionRequest, request_id: str) -> Run:
        started = time.perf_counter()
        md = self.call_metadata(request_id)
        dialect = self.decode.dialect()  # constraints in the form the decode engines take
        try:
            rendered = await self.template.RenderChat(
                template_pb2.RenderChatRequest(
                    model=self.model_id,
                    messages=req.messages,
                    tools=req.tools,
                    tool_choice=req.tool_choice,
                    parallel_tool_calls=req.parallel_tool_calls
                    if req.HasField("parallel_tool_calls")
                    else None,
                    response_format=req.response_format,
                    constraint_dialect=dialect,
                    reasoning_effort=req.reasoning_effort
                    if req.HasField("reasoning_effort")
                    else None,
                ),
                metadata=md,
            )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, "template") from None
        budget = completion_budget(
            req, len(rendered.prompt_token_ids), self.max_model_len, self.limits
        )
        run = Run(self, req, rendered, started, request_id, dialect, budget)
        try:
            await run.start()
        except BaseException:
            run.cancel_calls()
            raise
        return run


class Run:
    """One request in flight."""

    def __init__(
        self,
        orch: Orchestrator,
        req: chat_pb2.ChatCompletionRequest,
        rendered: template_pb2.RenderChatResponse,
        started: float,
        request_id: str,
        dialect: str,
        budget: tuple[int, str],
    ):
        self.orch = orch
        self.dialect = dialect  # the constraint's: only replicas taking it may run it
        self.max_tokens, self.budget_source = budget  # completion_budget()
        self.req = req
        self.rendered = rendered
        self.started = started
        self.id = request_id
        self.ttft: float | None = None
        self.finish: str | None = None
        self.created = int(time.time())
        self.prompt_tokens = len(rendered.prompt_token_ids)
        self.completion_tokens = 0
        self.decode_done: decode_pb2.GenerateComplete | None = None
        self.tool_calls = 0
        # A gRPC call or a multiplexed stream's handle, whichever the gateway runs with: Any
        # until the mux-off paths go.
        self.generate: Any = None
        self.extract: Any = None
        self.replica: Replica | None = None  # the decode replica this request runs on
        self.released = False
        self.call_text: dict[int, list[str]] = {}  # index -> [name, arguments so far]
        self.custom_calls: set[int] = set()  # indexes of custom tools' calls (raw input)

    def cancel_calls(self) -> None:
        for call in (self.generate, self.extract):
            if call is not None:
                call.cancel()

    def close(self) -> None:
        """Stop decoding and extracting (idempotent), and give back the in-flight place."""
        self.cancel_calls()
        if self.replica is not None:
            self.replica.outstanding -= 1
            self.replica = None
        if not self.released:
            self.released = True
            self.orch.in_flight -= 1

    async def start(self) -> None:
        req = self.req
        sampling = decode_pb2.SamplingParams(
            temperature=req.temperature if req.HasField("temperature") else 1.0,
            top_p=req.top_p if req.HasField("top_p") else 1.0,
        )
        if req.HasField("seed"):
            sampling.seed = req.seed
        md = self.orch.call_metadata(self.id)
        # The extractor stream opens first: if it is down, the request fails as a plain 503
        # before any SSE response starts.
        setup = extractor_pb2.ExtractSetup(
            model=req.model,
            tool_format=self.rendered.tool_format,
            tools=req.tools,
            tool_choice=req.tool_choice,
            stop=req.stop,
            reasoning=self.rendered.reasoning,
        )
        try:
            # A handle on a pod's multiplexed stream, or (--extractor-mux off) its own call:
            # both take tokens() and end(), and are read with read() (extractor_mux.py).
            self.extract = await self.orch.extractor.open(setup, md, self.id)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, "extractor") from None
        request = decode_pb2.GenerateRequest(
            request_id=self.id,
            prompt_token_ids=self.rendered.prompt_token_ids,
            sampling=sampling,
            max_tokens=self.max_tokens,
            stop_token_ids=self.rendered.stop_token_ids,
            constraint=self.rendered.constraint if self.rendered.HasField("constraint") else None,
        )
        await self._start_decode(request, md)
        self.ttft = time.perf_counter() - self.started
        self.orch.metrics.time_to_first_token.labels(self.orch.model_id).observe(self.ttft)

    async def _start_decode(self, request: decode_pb2.GenerateRequest, md) -> None:
        """Start on the replica with the fewest outstanding requests and wait for the first
        token. A replica that cannot be reached before that (the request never started there)
        is marked down and the next one is tried."""
        pool, full = self.orch.decode, None
        tried: set[str] = set()
        interval = self.stream_interval()
        while True:
            replica = pool.pick(self.dialect, exclude=tried)
            if replica is None:
                if full is not None:  # every serving replica's queue is full: 429
                    raise from_rpc_error(full, "decode")
                raise unavailable("no decode replica is serving; retry shortly")
            tried.add(replica.address)
            self.replica = replica
            replica.outstanding += 1
            # The multiplexed stream carries no per-call metadata: the id is in the request.
            self.generate = replica.open(
                request,
                self.orch.security.metadata if self.orch.decode_mux else md,
                self.orch.decode_mux,
                interval,
            )
            try:
                self.first = await self.generate.read()
                return
            except grpc.aio.AioRpcError as e:
                replica.outstanding -= 1
                self.replica = None
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    full = e  # its queue is full: another replica may have room
                elif e.code() == grpc.StatusCode.UNAVAILABLE and CODE_KEY not in dict(
                    e.trailing_metadata() or ()
                ):
                    pool.mark_down(replica)  # unreachable: the request never started there
                else:
                    raise from_rpc_error(e, "decode") from None

    def stream_interval(self) -> tuple[int, int]:
        """(tokens, ms) this request's tokens may be held in the decode mux: the request's own
        (gRPC ChatService), else the gateway's flags."""
        tokens, ms = self.orch.stream_interval
        if self.req.HasField("stream_interval"):
            si = self.req.stream_interval
            tokens, ms = si.tokens, si.ms or ms
        return tokens, ms

    async def _pump(self, extract) -> None:
        """decode -> extractor: token chunks, then the end with decode's finish reason. If it
        fails (decode died), it cancels the extractor call so the reader wakes at once."""
        try:
            await self._forward(extract)
        except BaseException:
            extract.cancel()
            raise

    async def _forward(self, extract) -> None:
        msg = self.first
        while msg is not grpc.aio.EOF:
            # A per-request call gives GenerateResponse; a multiplexed one (decode_mux.py) a
            # list of new token ids, then the GenerateComplete.
            if type(msg) is decode_pb2.GenerateResponse:
                msg = msg.chunk.token_ids if msg.WhichOneof("response") == "chunk" else msg.complete
            if type(msg) is not decode_pb2.GenerateComplete:
                self.completion_tokens += len(msg)
                await extract.tokens(msg)
            else:
                self.decode_done = msg
                await extract.end(msg.finish_reason)
                return
            msg = await self.generate.read()
        raise RequestError(
            "the decode service ended the stream without finishing", status=500, type="server_error"
        )

    def _chunk(
        self, delta: chat_pb2.Delta | None = None, finish: str | None = None
    ) -> chat_pb2.ChatCompletionChunk:
        choice = chat_pb2.ChunkChoice(index=0, delta=delta or chat_pb2.Delta())
        if finish:
            set_finish(choice, finish)
        return chat_pb2.ChatCompletionChunk(
            id=self.id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.req.model,
            choices=[choice],
        )

    def _deltas(self, resp: extractor_pb2.ExtractResponse):
        """One extractor response as chunks. A call's first chunk carries its id, type, name and
        empty arguments; its argument text follows in later chunks, as OpenAI streams it."""
        if resp.content or resp.reasoning_content:
            d = chat_pb2.Delta()
            if resp.content:
                d.content = resp.content
            if resp.reasoning_content:
                d.reasoning_content = resp.reasoning_content
            yield self._chunk(d)
        for c in resp.tool_calls:
            if c.custom:  # a custom tool's call (its first delta says): raw input, no JSON
                self.custom_calls.add(c.index)
            custom = c.index in self.custom_calls
            if not custom:
                self.call_text.setdefault(c.index, [c.name, ""])[1] += c.arguments
            if c.id:
                self.tool_calls += 1
                yield self._chunk(
                    chat_pb2.Delta(
                        tool_calls=[
                            chat_pb2.ToolCallChunk(
                                index=c.index,
                                id=c.id,
                                type="custom" if custom else "function",
                                name=c.name,
                                arguments="",
                                custom=custom,
                            )
                        ]
                    )
                )
            if c.arguments:
                yield self._chunk(
                    chat_pb2.Delta(
                        tool_calls=[
                            chat_pb2.ToolCallChunk(
                                index=c.index, arguments=c.arguments, custom=custom
                            )
                        ]
                    )
                )

    async def chunks(self) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
        """The stream as ChatCompletionChunk protos (the gRPC ChatService, completion())."""
        async for item in self.items():
            yield self._content_chunk(item) if isinstance(item, str) else item

    def _content_chunk(self, content: str) -> chat_pb2.ChatCompletionChunk:
        return self._chunk(chat_pb2.Delta(content=content))

    async def items(self) -> AsyncIterator[str | chat_pb2.ChatCompletionChunk]:
        """The stream in OpenAI's order: a delta that is only content comes as its text (the
        REST path writes it from pre-rendered bytes, no proto built: wire.content_sse), any
        other chunk as a ChatCompletionChunk."""
        orch = self.orch
        extract = self.extract
        pump: asyncio.Task | _Forward | None = None
        try:
            pump = self._start_pump(extract)
            yield self._chunk(chat_pb2.Delta(role="assistant"))
            finish = None
            itl = orch.metrics.inter_token_latency.labels(orch.model_id)
            last = time.perf_counter()
            while finish is None:
                resp = await _read(extract, pump)
                content = resp.content
                if resp.tool_calls or resp.reasoning_content:
                    now = time.perf_counter()
                    itl.observe(now - last)
                    last = now
                    for chunk in self._deltas(resp):
                        yield chunk
                elif content:
                    now = time.perf_counter()
                    itl.observe(now - last)
                    last = now
                    yield content
                finish = resp.finish_reason or None
            if finish == FinishReason.ABORT:
                raise RequestError(
                    "generation was aborted by the decode service", status=500, type="server_error"
                )
            failed = pump.exception() if pump.done() else None
            if failed is not None:
                raise failed
            yield self._chunk(finish=finish)
            if self.decode_done is not None:
                self.completion_tokens = self.decode_done.completion_tokens
            self._observe(finish)
            if self.req.include_usage:
                yield chat_pb2.ChatCompletionChunk(
                    id=self.id,
                    object="chat.completion.chunk",
                    created=self.created,
                    model=self.req.model,
                    usage=self.usage(),
                )
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e, "extractor") from None
        finally:
            # Whatever ended the stream (done, a stop string, the client leaving), stop decoding.
            self.close()
            if pump is not None and not pump.done():
                pump.cancel()

    def _start_pump(self, extract) -> asyncio.Task | _Forward:
        """What carries decode's tokens to the extractor. Both multiplexed (the default): the
        decode stream's reader hands them over itself (_Forward), no task and no wake-up per
        request per frame. Else a task per request (_pump)."""
        if type(self.generate) is DecodeHandle and type(extract) is ExtractHandle:
            return _Forward(self, extract)
        return asyncio.create_task(self._pump(extract))

    def _observe(self, finish: str) -> None:
        """A finished request, into the metrics; strict calls are checked against their
        schema once more, after decoding (the constraint should make every check pass)."""
        self.finish = finish
        m, model = self.orch.metrics, self.orch.model_id
        m.e2e_latency.labels(model).observe(time.perf_counter() - self.started)
        m.prompt_tokens.labels(model).observe(self.prompt_tokens)
        m.generation_tokens.labels(model).observe(self.completion_tokens)
        m.tokens_generated.labels(model).inc(self.completion_tokens)
        m.success.labels(model, finish).inc()
        if finish == FinishReason.LENGTH and self.budget_source != "request":
            # Ended by the server's limit, not the client's: a model that would have run on.
            m.length_capped.labels(model, self.budget_source).inc()
        if self.tool_calls:
            mode = choice_from_proto(self.req.tool_choice, has_tools=True).mode
            m.tool_calls.labels(model, self.rendered.tool_format, mode).inc(self.tool_calls)
        # A call cut by the length limit is no violation.
        complete = self.call_text if finish != FinishReason.LENGTH else {}
        for name, arguments in complete.values():
            try:
                value = json.loads(arguments)
            except json.JSONDecodeError:
                m.unparsed_arguments.labels(model).inc()
                continue
            validator = self.orch.strict_validator(self.req.tools, name)
            if validator is not None and not validator.is_valid(value):
                m.strict_violations.labels(model).inc()

    def usage(self) -> common.Usage:
        return common.Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            cached_tokens=self.decode_done.cached_tokens if self.decode_done else 0,
        )

    async def completion(self) -> chat_pb2.ChatCompletion:
        """The non-streamed response: the same chunks, accumulated."""
        content: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, common.ToolCall] = {}
        finish: str = FinishReason.STOP
        async for chunk in self.chunks():
            for ch in chunk.choices:
                if ch.delta.HasField("content"):
                    content.append(ch.delta.content)
                if ch.delta.HasField("reasoning_content"):
                    reasoning.append(ch.delta.reasoning_content)
                for c in ch.delta.tool_calls:
                    call = calls.setdefault(c.index, common.ToolCall(type="function"))
                    if c.custom:  # raw input into the custom call's fields
                        call.type = "custom"
                        if c.HasField("id"):
                            call.id, call.custom.name = c.id, c.name
                        call.custom.input += c.arguments
                        continue
                    if c.HasField("id"):
                        call.id = c.id
                        call.function.name = c.name
                    call.function.arguments += c.arguments
                if ch.HasField("finish_reason"):
                    finish = ch.finish_reason
        message = chat_pb2.ChoiceMessage(
            role="assistant", tool_calls=[calls[i] for i in sorted(calls)]
        )
        if content or not calls:
            message.content = "".join(content)
        if reasoning:
            message.reasoning_content = "".join(reasoning)
        choice = chat_pb2.Choice(index=0, message=message)
        set_finish(choice, finish)
        return chat_pb2.ChatCompletion(
            id=self.id,
            object="chat.completion",
            created=self.created,
            model=self.req.model,
            choices=[choice],
            usage=self.usage(),
        )


class _Forward:
    """The pump without a task (both streams multiplexed): the decode stream's reader calls
    `tokens`, `end` or `fail` for this request as it reads each frame, and they go into the
    extractor stream's pending message at once. Measured (bench.ceiling, 256 streams, every
    token its own event): a pump task's wake-up per request per frame was the gateway's
    largest cost after the socket writes. Quacks like the pump task where the reader checks it
    (done, exception, cancel)."""

    __slots__ = ("run", "extract", "error", "ended")

    def __init__(self, run: Run, extract: ExtractHandle):
        self.run, self.extract = run, extract
        self.error: BaseException | None = None
        self.ended = False
        handle: DecodeHandle = run.generate
        msg = run.first
        while True:  # what arrived before the stream was read: the first token, and since
            if type(msg) is decode_pb2.GenerateComplete:
                self.end(msg)
                return
            self.tokens(msg)
            msg = handle._take()
            if msg is None:
                break
        if handle.error is not None:
            self.fail(handle.error)
        elif handle.ended:
            self.fail(
                RequestError(
                    "the decode service ended the stream without finishing",
                    status=500,
                    type="server_error",
                )
            )
        else:
            handle.forward = self

    def tokens(self, ids) -> None:
        self.run.completion_tokens += len(ids)
        extract = self.extract
        if not extract.ended:
            extract.stream.put_tokens(extract.handle, ids)

    def end(self, complete: decode_pb2.GenerateComplete) -> None:
        self.ended = True
        self.run.decode_done = complete
        extract = self.extract
        if not extract.ended:
            extract.stream.put_end(extract.handle, complete.finish_reason)

    def fail(self, error: BaseException) -> None:
        """Decode failed: the reader wakes (its extractor handle cancelled) and raises this."""
        self.ended = True
        self.error = error
        self.extract.cancel()

    # what the reader asks of a pump task
    def done(self) -> bool:
        return self.ended

    def cancelled(self) -> bool:
        return False

    def exception(self) -> BaseException | None:
        return self.error

    def cancel(self) -> None:
        self.ended = True


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def new_request_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _pump_error(pump: asyncio.Task | _Forward) -> BaseException | None:
    """Why the pump failed (decode died), as the error to raise; None if it has not."""
    if not pump.done() or pump.cancelled() or pump.exception() is None:
        return None
    exc = pump.exception()
    return from_rpc_error(exc, "decode") if isinstance(exc, grpc.aio.AioRpcError) else exc


async def _read(extract, pump: asyncio.Task | _Forward):
    """The extractor's next response. A plain read per message (no task or wait set up per
    token); when the pump fails it cancels this call, and its error is raised instead."""
    try:
        resp = await extract.read()
    except (asyncio.CancelledError, grpc.aio.AioRpcError):
        if (exc := _pump_error(pump)) is not None:
            raise exc from None
        raise
    if resp is grpc.aio.EOF:
        if (exc := _pump_error(pump)) is not None:
            raise exc
        raise RequestError(
            "the extractor service ended the stream early", status=500, type="server_error"
        )
    return resp
