"""One request's run, from its rendered prompt to its last event: the lifecycle, no wire format.

`start` opens the request's extraction on an extractor pod, then its decoding on a decode
replica with a route to that pod (the replica pushes the tokens there; the gateway never sees
them), and waits for the first tokens, so a refusal fails as a plain error before any stream
starts. `events` then yields the run as typed events (events.py), which each presentation
renders (chat_render.py). Cancellation goes to decode directly: `close` frees the slot within
one step. A decode replica that fails before the first token is marked down and the request is
retried on another, on a fresh extraction.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from toolwire.errors import CODE_KEY, RequestError, from_rpc_error, unavailable
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.decode.v1 import decode_pb2
from toolwire.grpc_gen.extractor.v1 import extractor_pb2
from toolwire.grpc_gen.template.v1 import template_pb2
from toolwire.request.from_proto import choice_from_proto
from toolwire.vocabulary import FinishReason

from . import events as ev
from .extract_stream import ExtractEntry
from .generate_stream import GenerateEntry

if TYPE_CHECKING:
    from .orchestrator import Orchestrator


class Run:
    """One request in flight: it holds one of the gateway's in-flight places until `close`."""

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
        self.cached_tokens = 0
        self.tool_calls = 0
        self.generation: GenerateEntry | None = None
        self.extraction: ExtractEntry | None = None
        self.released = False
        self.call_text: dict[int, list[str]] = {}  # index -> [name, arguments so far]
        self.custom_calls: set[int] = set()  # indexes of custom tools' calls (raw input)

    def close(self) -> None:
        """Stop decoding and extracting (idempotent), and give back the in-flight place."""
        for entry in (self.generation, self.extraction):
            if entry is not None:
                entry.cancel()
        if not self.released:
            self.released = True
            self.orch.in_flight -= 1

    # -- start -------------------------------------------------------------------------
    async def start(self) -> None:
        req = self.req
        sampling = decode_pb2.SamplingParams(
            temperature=req.temperature if req.HasField("temperature") else 1.0,
            top_p=req.top_p if req.HasField("top_p") else 1.0,
        )
        if req.HasField("seed"):
            sampling.seed = req.seed
        setup = extractor_pb2.ExtractSetup(
            model=req.model,
            tool_format=self.rendered.tool_format,
            tools=req.tools,
            tool_choice=req.tool_choice,
            stop=req.stop,
            reasoning=self.rendered.reasoning,
        )
        request = decode_pb2.GenerateRequest(
            request_id=self.id,
            prompt_token_ids=self.rendered.prompt_token_ids,
            sampling=sampling,
            max_tokens=self.max_tokens,
            stop_token_ids=self.rendered.stop_token_ids,
            constraint=self.rendered.constraint if self.rendered.HasField("constraint") else None,
        )
        await self._start(setup, request)
        self.ttft = time.perf_counter() - self.started
        self.orch.metrics.time_to_first_token.labels(self.orch.model_id).observe(self.ttft)

    async def _start(
        self, setup: extractor_pb2.ExtractSetup, request: decode_pb2.GenerateRequest
    ) -> None:
        """Start on the decode replica with the fewest of this gateway's requests and wait for
        the first tokens. A replica that cannot be reached before that (the request never
        started there) is marked down and the next one is tried, on a fresh extraction."""
        decode, full = self.orch.decode, None
        tried: set[str] = set()
        interval = self.stream_interval()
        while True:
            ready = decode.order(self.orch.takes(self.dialect), exclude=tried)
            if not ready:
                if full is not None:  # every serving replica's queue is full: 429
                    raise from_rpc_error(full, "decode")
                raise unavailable("no decode replica is serving; retry shortly")
            replica = ready[0]
            replica.picks += 1
            tried.add(replica.address)
            # The extraction first: if no pod is up, a plain 503 before any decoding starts.
            self.extraction = await self.orch.open_extraction(setup, self.id)
            self.generation = replica.stream.open(request, self.extraction.route, interval)
            try:
                await self.generation.started()
            except grpc.aio.AioRpcError as e:
                self.extraction.cancel()
                self.generation = self.extraction = None
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    full = e  # its queue is full: another replica may have room
                elif e.code() == grpc.StatusCode.UNAVAILABLE and CODE_KEY not in dict(
                    e.trailing_metadata() or ()
                ):
                    decode.mark_down(replica)  # unreachable: the request never started there
                else:
                    raise from_rpc_error(e, "decode") from None
                continue
            self.generation.on_fail = self._decode_failed
            return

    def _decode_failed(self, error: BaseException) -> None:
        """Decode failed after the first tokens: the reader wakes with the error, and the
        extractor drops the request."""
        extraction = self.extraction
        if extraction is None or extraction.ended:
            return
        if isinstance(error, grpc.aio.AioRpcError):
            error = from_rpc_error(error, "decode")
        extraction.stream.forget(extraction.handle, cancel=True)
        extraction._fail(error)

    def stream_interval(self) -> tuple[int, int]:
        """(tokens, ms) this request's tokens may be held by decode: the request's own
        (gRPC ChatService), else the gateway's flags."""
        tokens, ms = self.orch.stream_interval
        if self.req.HasField("stream_interval"):
            si = self.req.stream_interval
            tokens, ms = si.tokens, si.ms or ms
        return tokens, ms

    # -- events ------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[ev.Event]:
        """The run as typed events, in the order the model wrote them; Finish then Usage end a
        run that finished, Failed one that did not. The run is closed when this ends, however
        it ends (done, a stop string, the client leaving)."""
        extraction = self.extraction
        assert extraction is not None, "start() opened the extraction"
        metrics, model = self.orch.metrics, self.orch.model_id
        itl = metrics.inter_token_latency.labels(model)
        last = time.perf_counter()
        try:
            while True:
                try:
                    resp = await extraction.read()
                except grpc.aio.AioRpcError as e:
                    yield ev.Failed(from_rpc_error(e, "extractor"))
                    return
                except RequestError as e:  # decode failed (_decode_failed)
                    yield ev.Failed(e)
                    return
                if resp is grpc.aio.EOF:
                    yield ev.Failed(
                        RequestError(
                            "the extractor service ended the stream early",
                            status=500,
                            type="server_error",
                        )
                    )
                    return
                if resp.content or resp.reasoning_content or resp.tool_calls:
                    now = time.perf_counter()
                    itl.observe(now - last)
                    last = now
                    if resp.reasoning_content:
                        yield ev.Reasoning(resp.reasoning_content)
                    if resp.content:
                        yield ev.Content(resp.content)
                    for c in resp.tool_calls:
                        for event in self._call_events(c):
                            yield event
                if resp.finish_reason:
                    break
            finish = FinishReason(resp.finish_reason)
            if finish == FinishReason.ABORT:
                yield ev.Failed(
                    RequestError(
                        "generation was aborted by the decode service",
                        status=500,
                        type="server_error",
                    )
                )
                return
            self.completion_tokens = resp.usage.completion_tokens
            self.cached_tokens = resp.usage.cached_tokens
            self._observe(finish)
            yield ev.Finish(finish)
            yield ev.Usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)
        finally:
            self.close()

    def _call_events(self, c: extractor_pb2.ToolCallDelta):
        """A call's delta as events: its opening (the first delta has the id), then its text."""
        if c.custom:  # a custom tool's call (its first delta says): raw input, no JSON
            self.custom_calls.add(c.index)
        custom = c.index in self.custom_calls
        if not custom:
            self.call_text.setdefault(c.index, [c.name, ""])[1] += c.arguments
        if c.id:
            self.tool_calls += 1
            yield ev.CallOpened(c.index, c.id, c.name, custom)
        if c.arguments:
            yield (
                ev.CustomInput(c.index, c.arguments)
                if custom
                else ev.Arguments(c.index, c.arguments)
            )

    def _observe(self, finish: FinishReason) -> None:
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
