"""DecodeService: Generate streams new token ids from the chosen engine; Abort stops one."""

from __future__ import annotations

import asyncio
import logging

from toolwire.errors import RequestError, abort_with
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.grpc_gen.decode.v1 import decode_pb2_grpc as pb_grpc
from toolwire.plumbing import request_context
from toolwire.plumbing.grpc_server import GrpcServer, wait_for_signal
from toolwire.plumbing.internal_security import ClientSecurity, ServerSecurity
from toolwire.plumbing.service_metrics import ServiceMetrics
from toolwire.runtime import model_source
from toolwire.runtime.freed_memory import return_freed_memory
from toolwire.runtime.without_torch import keep_torch_out

from .admission import admit, engine_request, request_error
from .config import DecodeConfig
from .engine import Engine, EngineBusy, EngineRequestError
from .generate_stream import complete_message, serve_stream
from .push_tokens import PushTokensStreams
from .step_choice import use_ggml

log = logging.getLogger("toolwire.decode")


class DecodeServicer(pb_grpc.DecodeServiceServicer):
    def __init__(
        self,
        engine: Engine,
        model_id: str,
        max_queue: int = 256,
        links: PushTokensStreams | None = None,
    ):
        self.engine = engine
        self.model_id = model_id
        self.max_queue = max_queue
        self.links = links or PushTokensStreams()  # routed requests' streams to the extractors

    async def Generate(self, request, context):
        request_context.bind(context)
        try:
            admit(self.engine, self.max_queue, request)
        except RequestError as e:
            await abort_with(context, e)
        stream = self.engine.generate(engine_request(request))
        try:
            async for out in stream:
                if out.token_ids:
                    yield pb.GenerateResponse(chunk=pb.GenerateChunk(token_ids=out.token_ids))
                if out.finish_reason:
                    yield pb.GenerateResponse(complete=complete_message(out))
        except (EngineRequestError, EngineBusy) as e:
            await abort_with(context, request_error(e))
        finally:
            await stream.aclose()  # a cancelled call aborts the request in the engine

    async def GenerateStream(self, request_iterator, context):
        """The multiplexed form (generate_stream.py): the gateway's one stream."""
        request_context.bind(context)
        await serve_stream(self.engine, self.max_queue, request_iterator, context, self.links)

    async def Abort(self, request, context):
        request_context.bind(context)
        return pb.AbortResponse(aborted=await self.engine.abort(request.request_id))

    async def GetModelInfo(self, request, context):
        info = self.engine.info
        return common.ModelInfo(
            model_id=self.model_id,
            max_model_len=info.max_model_len,
            vocab_size=info.vocab_size,
            engine=info.name,
            active_requests=self.engine.active_requests(),
            constraint_dialect=info.constraint_dialect,
        )


def decode_metrics(engine: Engine, model_id: str) -> ServiceMetrics:
    m = ServiceMetrics(model_id)
    batch = engine.info.max_batch
    m.gauge(
        "toolwire_num_requests_running",
        "Requests holding a batch slot (prefilling or decoding)",
        lambda: engine.occupancy().running,
    )
    m.gauge(
        "toolwire_num_requests_waiting",
        "Requests queued for a slot",
        lambda: engine.occupancy().waiting,
    )
    m.gauge(
        "toolwire_batch_occupancy_ratio",
        "Batch slots in use, of --max-batch",
        lambda: engine.occupancy().running / batch,
    )
    m.gauge(
        "toolwire_kv_cache_usage_ratio",
        "KV-cache positions in use, of all slots' (NaN where the engine cannot tell)",
        lambda: engine.occupancy().cache_used,
    )
    stats = engine.stats
    if stats is not None:
        m.counter("toolwire_decode_steps", "Batched forward passes", lambda: stats.steps)
        m.counter("toolwire_generation_tokens", "Tokens generated", lambda: stats.tokens)
        m.counter(
            "toolwire_decode_forward_seconds", "Time in forward passes", lambda: stats.forward_s
        )
        m.counter(
            "toolwire_decode_mask_seconds", "Time applying grammar masks", lambda: stats.mask_s
        )
        m.gauge(
            "toolwire_decode_step_threads",
            "Threads the last engine step ran (the thread policy's choice, --thread-policy)",
            lambda: stats.step_threads,
        )
        m.counter(
            "toolwire_decode_thread_switches",
            "Times the adaptive thread policy changed the step's thread count",
            lambda: stats.thread_switches,
        )
        # vLLM's spec_decode series: tokens per forward is 1 + accepted / drafts where
        # every sequence drafts, and tokens / steps for the whole engine.
        m.counter(
            "toolwire_spec_decode_num_drafts",
            "Drafts verified (speculative decoding, --speculation)",
            lambda: stats.spec_drafts,
        )
        m.counter(
            "toolwire_spec_decode_num_draft_tokens",
            "Draft tokens verified",
            lambda: stats.spec_draft_tokens,
        )
        m.counter(
            "toolwire_spec_decode_num_accepted_tokens",
            "Draft tokens the model kept (each one a forward saved)",
            lambda: stats.spec_accepted_tokens,
        )
        m.counter(
            "toolwire_decode_aborts",
            "Requests ended early (client gone or Abort); each frees its slot at the next step",
            lambda: stats.aborts,
        )
        m.counter(
            "toolwire_decode_queue_timeouts",
            "Requests that waited past --queue-timeout",
            lambda: stats.queue_timeouts,
        )
        m.counter(
            "toolwire_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache (as vLLM's prefix_cache_queries)",
            lambda: stats.prefix_queries,
        )
        m.counter(
            "toolwire_prefix_cache_hits",
            "Prompt tokens whose KV was reused instead of prefilled",
            lambda: stats.prefix_hits,
        )
    return m


def decide_step(config: DecodeConfig) -> tuple[DecodeConfig, bool]:
    """The batch engine's step decided before anything imports torch, and torch kept out of
    this process where nothing in it would run torch: the ggml step, the null engine. Returns
    the config with --step auto resolved (the engine then decides nothing again) and whether
    torch is kept out (not where it was loaded already: an in-process test)."""
    if config.engine != "batch":
        return config, False
    source = model_source.resolve(config.model)
    if source.null:
        return config, keep_torch_out()
    if not use_ggml(source, config.step, config.device):
        return config.but(step="torch"), False
    return config.but(step="ggml"), keep_torch_out()


def make_engine(config: DecodeConfig) -> Engine:
    if config.model == model_source.NULL and config.engine == "batch":
        from .null_engine import NullEngine

        return NullEngine(
            config.max_batch,
            config.max_model_len,
            config.queue_timeout,
            config.null_step_ms / 1000,
        )
    if config.engine == "batch":
        from .batch_engine import BatchEngine

        return BatchEngine(
            config.model,
            dtype=config.dtype,
            max_batch=config.max_batch,
            max_model_len=config.max_model_len,
            device=config.device,
            queue_timeout=config.queue_timeout,
            prefix_cache_mb=config.prefix_cache_mb,
            prefix_reuse=not config.no_prefix_reuse,
            jump_forward=not config.no_jump_forward,
            step=config.step,
            kv_tokens=config.kv_tokens,
            kv_type=config.kv_type,
            threads=config.threads,
            thread_policy=config.thread_policy,
            speculation=config.speculation,
        )
    if config.engine == "trtllm":
        from .trtllm_engine import TrtllmEngine

        return TrtllmEngine.from_config(config)
    raise SystemExit(f"unknown engine {config.engine!r}: batch or trtllm")


async def serve(args) -> None:
    security = ServerSecurity.from_args(args)
    security.check_address(args.host)  # before the model loads: fail fast
    config, torch_out = decide_step(DecodeConfig.from_args(args))
    engine = make_engine(config)
    await engine.start()
    model_id = engine.model_id
    server = GrpcServer(f"{args.host}:{args.port}", security)
    # Routed requests' tokens go to the extractor pods the gateway names, dialled as the
    # gateway dials them (its TLS flags, the internal token).
    links = PushTokensStreams(ClientSecurity.from_args(args))
    server.add(
        pb_grpc.add_DecodeServiceServicer_to_server,
        DecodeServicer(engine, model_id, config.max_queue, links),
        pb.DESCRIPTOR,
    )
    await server.start()
    decode_metrics(engine, model_id).serve(args.metrics_port, args.host)
    return_freed_memory()
    log.info(
        "decode service (%s%s) on %s:%s",
        engine.describe(),
        ", without torch" if torch_out else "",
        args.host,
        args.port,
    )
    stop = asyncio.ensure_future(wait_for_signal())
    fault = asyncio.ensure_future(engine.wait_fault())
    await asyncio.wait([stop, fault], return_when=asyncio.FIRST_COMPLETED)
    await server.stop()
    if fault.done():
        # Its requests ended with an error already; a restart (toolwire up, Kubernetes) is
        # the way back, not a process that accepts streams and never runs them.
        log.error("decode engine failed (%r): exiting for a restart", fault.result())
        raise SystemExit(1)
    fault.cancel()
    await links.close()
    await engine.stop()
