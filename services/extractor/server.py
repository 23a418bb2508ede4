"""ExtractorService: token ids in, OpenAI-shaped content and tool-call deltas out."""

from __future__ import annotations

import logging

from toolwire.formats import Delta, get_format
from toolwire.formats.reasoning import ContentOnly, ReasoningExtractor
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2_grpc as pb_grpc
from toolwire.plumbing import request_context
from toolwire.plumbing.grpc_server import GrpcServer, wait_for_signal
from toolwire.plumbing.internal_security import ServerSecurity
from toolwire.plumbing.service_metrics import ServiceMetrics
from toolwire.request.convert import choice_from_proto, tool_from_proto
from toolwire.request.errors import RequestError, abort_with
from toolwire.stack import model_source

from .detokenizer import IncrementalDetokenizer
from .stop_strings import StopStrings

log = logging.getLogger("toolwire.extractor")


class MarkerWatch:
    """Whether the content streamed so far holds the call marker (a call left unparsed), across
    piece boundaries."""

    def __init__(self, marker: str):
        self.marker, self.tail, self.seen = marker, "", False

    def marker_in(self, content: str) -> bool:
        if self.marker and not self.seen and content:
            text = self.tail + content
            self.seen = self.marker in text
            self.tail = text[len(text) - len(self.marker) + 1 :]
        return self.seen


def finish_reason(decode_reason: str, calls: int) -> str:
    if decode_reason == "stop" and calls:
        return "tool_calls"
    return decode_reason


class ExtractorServicer(pb_grpc.ExtractorServiceServicer):
    def __init__(self, tokenizer, default_format: str):
        self.tokenizer = tokenizer
        self.default_format = default_format
        self.streams = 0
        self.unparsed = 0  # streams with the call marker in their content

    async def Extract(self, request_iterator, context):
        request_context.bind(context)
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("message") != "setup":
            await abort_with(context, RequestError("the first message must be setup", "setup"))
        setup = first.setup
        self.streams += 1
        try:
            fmt = get_format(setup.tool_format or self.default_format, self.tokenizer)
        except ValueError as e:
            await abort_with(context, RequestError(str(e), "tool_format"))
        tools = [tool_from_proto(t) for t in setup.tools]
        choice = choice_from_proto(setup.tool_choice, bool(tools))
        # With tool_choice none (or no tools) the call marker is banned: all text is content.
        # It reads calls of the tools the choice lets the model call (allowed_tools, named):
        # anything else is content.
        extractor = (
            fmt.extractor(choice.callable(tools) if choice.mode != "none" else [])
            if (tools and choice.mode != "none") or fmt.frames_all_output
            else None
        )
        if setup.reasoning:
            extractor = ReasoningExtractor(extractor or ContentOnly(), setup.reasoning)
        detok = IncrementalDetokenizer(self.tokenizer)
        stops = StopStrings(list(setup.stop))
        seen = MarkerWatch(fmt.call_marker if extractor is not None else "")

        def respond(delta: Delta, final: bool) -> pb.ExtractResponse:
            content = stops.feed(delta.content) + (stops.flush() if final and not stops.hit else "")
            return pb.ExtractResponse(
                content=content,
                reasoning_content=delta.reasoning,
                tool_calls=[
                    pb.ToolCallDelta(
                        index=c.index,
                        id=c.id or "",
                        name=c.name or "",
                        arguments=c.arguments,
                        custom=c.custom,
                    )
                    for c in delta.calls
                ],
            )

        def parse(text: str, final: bool) -> Delta:
            if extractor is None:
                return Delta(content=text)
            out = extractor.feed(text)
            if final:
                out.extend(extractor.finish())
            return out

        async for message in request_iterator:
            kind = message.WhichOneof("message")
            if kind == "tokens":
                resp = respond(parse(detok.add(list(message.tokens.token_ids)), False), False)
                if stops.hit:
                    resp.finish_reason = "stop"
                    yield resp
                    return
                if resp.content or resp.tool_calls or resp.reasoning_content:
                    seen.marker_in(resp.content)
                    yield resp
            elif kind == "end":
                resp = respond(parse(detok.flush(), True), True)
                calls = extractor.call_count if extractor else 0
                if seen.marker_in(resp.content):
                    self.unparsed += 1
                resp.finish_reason = (
                    "stop" if stops.hit else finish_reason(message.end.finish_reason, calls)
                )
                yield resp
                return


async def serve(args) -> None:
    security = ServerSecurity.from_args(args)
    security.check_address(args.host)  # before the model loads: fail fast
    source = model_source.resolve(args.model)
    tokenizer = model_source.load_tokenizer(source)
    fmt = args.tool_format
    if not fmt:
        from toolwire.formats import detect_format

        fmt = detect_format(tokenizer)
        if fmt is None:
            raise SystemExit("cannot tell this model's tool format; name it with --tool-format")
    server = GrpcServer(f"{args.host}:{args.port}", security)
    servicer = ExtractorServicer(tokenizer, fmt)
    server.add(pb_grpc.add_ExtractorServiceServicer_to_server, servicer, pb.DESCRIPTOR)
    await server.start()
    metrics = ServiceMetrics(source.default_id)
    metrics.counter(
        "toolwire_extractor_streams", "Extraction streams served", lambda: servicer.streams
    )
    metrics.counter(
        "toolwire_extractor_unparsed_calls",
        "Streams whose text held the format's "
        "call marker but no call could be parsed from it (left as content)",
        lambda: servicer.unparsed,
    )
    metrics.serve(args.metrics_port, args.host)
    log.info("extractor service on %s:%s", args.host, args.port)
    await wait_for_signal()
    await server.stop()
