"""The load against the torch engine called in-process: no gRPC, no gateway, no extractor.
Prompts and constraints come from the template service's own code, so both sides decode the
same token sequences."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from .measure import Timing, summarize


async def make_engine(args):
    if args.model == "null":  # no forward pass: the serving path's ceiling (null_engine.py)
        from toolwire.services.decode.null_engine import NullEngine

        engine = NullEngine(max_batch=max(args.concurrency))
        await engine.start()
        return engine
    from toolwire.services.decode.batch_engine import BatchEngine

    engine = BatchEngine(
        args.model,
        dtype=args.dtype,
        max_batch=max(args.concurrency),
        device=args.device,
        threads=getattr(args, "threads", None),
        kv_type=getattr(args, "kv_type", None),
    )
    await engine.start()
    return engine


def make_renderer(engine):
    from toolwire.formats import get_format
    from toolwire.runtime import model_source
    from toolwire.services.template.server import TemplateServicer

    # the template's tokenizer (the engine's may be the GGUF's own, which renders no template)
    return TemplateServicer(
        model_source.load_tokenizer(engine.source),
        get_format("hermes"),
        engine.model_id,
        engine.info.max_model_len,
        engine.info.vocab_size,
    )


def engine_request(renderer, body: dict, rid: str):
    from toolwire.constraints.kinds import Constraint
    from toolwire.gateway.openai_models import ChatCompletionRequest
    from toolwire.gateway.rest_to_proto import to_proto
    from toolwire.grpc_gen.template.v1 import template_pb2
    from toolwire.services.decode.engine import EngineRequest

    req = to_proto(ChatCompletionRequest.model_validate(body))
    rendered = renderer.render(
        template_pb2.RenderChatRequest(
            model=req.model,
            messages=req.messages,
            tools=req.tools,
            tool_choice=req.tool_choice,
            parallel_tool_calls=req.parallel_tool_calls
            if req.HasField("parallel_tool_calls")
            else None,
            response_format=req.response_format,
        )
    )
    return EngineRequest(
        rid,
        list(rendered.prompt_token_ids),
        req.max_completion_tokens,
        list(rendered.stop_token_ids),
        temperature=req.temperature,
        constraint=Constraint.from_proto(rendered.constraint),
    )


async def run_load(engine, renderer, bodies: list[dict]) -> dict:
    async def one(i: int, body: dict) -> Timing:
        t = Timing(time.perf_counter())  # rendering counts, as it does behind the gateway
        req = engine_request(renderer, body, f"bench-{time.perf_counter_ns()}-{i}")
        async for out in engine.generate(req):
            now = time.perf_counter()
            if out.token_ids:
                t.first = t.first or now
                t.events.append(now)
            t.tokens = out.completion_tokens or t.tokens
        return t

    start = time.perf_counter()
    timings = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return summarize(list(timings), time.perf_counter() - start)


def constraint_cost(engine) -> SimpleNamespace:
    s = engine.stats
    return SimpleNamespace(
        steps=s.steps,
        forward_ms=1000 * s.forward_s / max(1, s.steps),
        mask_ms=1000 * s.mask_s / max(1, s.steps),
        compiles=engine.compiler.compiles,
    )
