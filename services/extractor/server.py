"""ExtractorService: token ids in, OpenAI-shaped content and tool-call deltas out."""

from __future__ import annotations

import logging

from toolwire.errors import RequestError, abort_with
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2_grpc as pb_grpc
from toolwire.plumbing import request_context
from toolwire.plumbing.grpc_server import GrpcServer, wait_for_signal
from toolwire.plumbing.internal_security import ServerSecurity
from toolwire.plumbing.service_metrics import ServiceMetrics
from toolwire.runtime import model_source
from toolwire.runtime.freed_memory import return_freed_memory

from .config import ExtractorConfig
from .extract_stream import ServedExtractStream, serve_stream
from .extraction import Extraction

log = logging.getLogger("toolwire.extractor")


class ExtractorServicer(pb_grpc.ExtractorServiceServicer):
    def __init__(self, tokenizer, default_format: str):
        self.tokenizer = tokenizer
        self.default_format = default_format
        self.streams = 0
        self.unparsed = 0  # streams with the call marker in their content
        self.sessions: dict[
            str, ServedExtractStream
        ] = {}  # gateway sessions by id (extract_stream.py)

    async def Extract(self, request_iterator, context):
        request_context.bind(context)
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("message") != "setup":
            await abort_with(context, RequestError("the first message must be setup", "setup"))
        self.streams += 1
        try:
            state = Extraction(first.setup, self.tokenizer, self.default_format)
        except RequestError as e:
            await abort_with(context, e)
        async for message in request_iterator:
            kind = message.WhichOneof("message")
            if kind == "tokens":
                resp = state.tokens(message.tokens.token_ids)
            elif kind == "end":
                resp = state.end(message.end.finish_reason)
                self.unparsed += state.unparsed
            else:
                continue
            if resp is not None:
                yield resp
            if state.done:
                return

    async def ExtractStream(self, request_iterator, context):
        await serve_stream(self, request_iterator, context)

    async def PushTokens(self, request_iterator, context):
        """A decode replica's tokens for routed requests, into their gateways' sessions. A
        session that is gone (its gateway stream ended) takes nothing: its requests are over."""
        taken = 0
        try:
            async for push in request_iterator:
                taken += 1
                for tokens in push.sessions:
                    mux = self.sessions.get(tokens.session)
                    if mux is not None:
                        mux.push(tokens)
        except Exception:  # noqa: BLE001 - the replica went away; its gateways learn it too
            log.info("a decode replica's token stream ended after %d messages", taken)
        return pb.PushSummary(messages=taken)


async def serve(args) -> None:
    security = ServerSecurity.from_args(args)
    security.check_address(args.host)  # before the model loads: fail fast
    config = ExtractorConfig.from_args(args)
    source = model_source.resolve(config.model)
    # The Rust tokenizer decodes; the formats read its vocabulary and template's text.
    tokenizer = model_source.load_tokenizer_json(source, chat_template=True)
    fmt = config.tool_format
    if not fmt:
        from toolwire.formats import detect_format

        fmt = detect_format(tokenizer)
        if fmt is None:
            raise SystemExit("cannot tell this model's tool format; name it with --tool-format")
    server = GrpcServer(f"{args.host}:{args.port}", security)
    servicer = ExtractorServicer(tokenizer, fmt)
    server.add(pb_grpc.add_ExtractorServiceServicer_to_server, servicer, pb.DESCRIPTOR)
    await server.start()
    return_freed_memory()
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
