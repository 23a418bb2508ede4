"""DecodeService: Generate streams new token ids from the chosen engine; Abort stops one."""

from __future__ import annotations

import logging


from toolwire.common.v1 import common_pb2 as common
from toolwire.decode.v1 import decode_pb2 as pb
from toolwire.decode.v1 import decode_pb2_grpc as pb_grpc
from toolwire.errors import RequestError, abort_with
from toolwire.grpc_server import GrpcServer, wait_for_signal
from toolwire.service_metrics import serve_metrics

from .engine import Engine, EngineRequest, EngineRequestError

log = logging.getLogger("toolwire.decode")


def engine_request(r: pb.GenerateRequest) -> EngineRequest:
    kind = r.constraint.WhichOneof("kind")
    return EngineRequest(
        request_id=r.request_id,
        prompt_ids=list(r.prompt_token_ids),
        max_tokens=r.max_tokens,
        stop_ids=list(r.stop_token_ids),
        temperature=r.sampling.temperature,
        top_p=r.sampling.top_p,
        seed=r.sampling.seed if r.sampling.HasField("seed") else None,
        constraint=(kind, getattr(r.constraint, kind)) if kind else None,
    )


class DecodeServicer(pb_grpc.DecodeServiceServicer):
    def __init__(self, engine: Engine, model_id: str):
        self.engine = engine
        self.model_id = model_id

    async def Generate(self, request, context):
        if not request.request_id:
            await abort_with(context, RequestError("request_id is required", "request_id"))
        stream = self.engine.generate(engine_request(request))
        try:
            async for out in stream:
                if out.token_ids:
                    yield pb.GenerateResponse(chunk=pb.GenerateChunk(token_ids=out.token_ids))
                if out.finish_reason:
                    yield pb.GenerateResponse(complete=pb.GenerateComplete(
                        finish_reason=out.finish_reason, prompt_tokens=out.prompt_tokens,
                        completion_tokens=out.completion_tokens))
        except EngineRequestError as e:
            await abort_with(context, RequestError(str(e), e.param))
        finally:
            await stream.aclose()  # a cancelled call aborts the request in the engine

    async def Abort(self, request, context):
        return pb.AbortResponse(aborted=await self.engine.abort(request.request_id))

    async def GetModelInfo(self, request, context):
        info = self.engine.info
        return common.ModelInfo(model_id=self.model_id, max_model_len=info.max_model_len,
                                vocab_size=info.vocab_size, engine=info.name,
                                active_requests=self.engine.active_requests())


def make_engine(args) -> Engine:
    if args.engine == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(args.model, dtype=args.dtype, max_batch=args.max_batch,
                           max_model_len=args.max_model_len, device=args.device)
    if args.engine == "trtllm":
        from .trtllm_engine import TrtllmEngine

        return TrtllmEngine.from_args(args)
    raise SystemExit(f"unknown engine {args.engine!r}: torch or trtllm")


async def serve(args) -> None:
    engine = make_engine(args)
    await engine.start()
    model_id = getattr(getattr(engine, "source", None), "default_id", args.model)
    server = GrpcServer(f"{args.host}:{args.port}")
    server.add(pb_grpc.add_DecodeServiceServicer_to_server, DecodeServicer(engine, model_id),
               pb.DESCRIPTOR)
    await server.start()
    stats = getattr(engine, "stats", None)
    serve_metrics(args.metrics_port, {
        "toolwire_decode_active_requests": ("Requests holding a decode slot",
                                            engine.active_requests),
        **({"toolwire_decode_tokens": ("Tokens generated", lambda: stats.tokens),
            "toolwire_decode_steps": ("Batched decode steps", lambda: stats.steps),
            "toolwire_decode_mask_seconds": ("Time spent on grammar masks",
                                             lambda: stats.mask_s),
            "toolwire_decode_forward_seconds": ("Time spent in forward passes",
                                                lambda: stats.forward_s)} if stats else {}),
    })
    log.info("decode service (%s engine) on %s:%s", engine.info.name, args.host, args.port)
    await wait_for_signal()
    await server.stop()
    await engine.stop()
