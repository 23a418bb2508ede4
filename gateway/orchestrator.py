"""Admission and render: the one way into a run, for every presentation (chat REST, gRPC).

`open` checks the request, takes an in-flight place, renders the prompt (template service) and
starts the run (run.py), which waits for the first tokens, so a bad request fails as a plain
error before any stream starts. The orchestrator also holds the replica sets the runs use:
decode replicas and extractor pods (replicas.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
from collections.abc import Callable

import grpc
import jsonschema

from toolwire.constraints.dialects import STRUCTURAL_TAG, accepts, common_dialect
from toolwire.errors import RequestError, from_rpc_error, overloaded
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2_grpc
from toolwire.grpc_gen.extractor.v1 import extractor_pb2, extractor_pb2_grpc
from toolwire.grpc_gen.template.v1 import template_pb2, template_pb2_grpc
from toolwire.plumbing.grpc_server import check_serving
from toolwire.plumbing.internal_security import ClientSecurity
from toolwire.plumbing.request_context import REQUEST_ID_KEY
from toolwire.request.checks import check_chat_request
from toolwire.request.limits import Limits, completion_budget
from toolwire.vocabulary import ErrorCode

from .extract_stream import ExtractEntry, ExtractStream
from .generate_stream import GenerateStream
from .metrics import Metrics
from .replicas import Replica, ReplicaSet
from .resolve import round_robin_target, split
from .run import Run

log = logging.getLogger("toolwire.gateway")


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
        stream_interval: tuple[int, int] = (0, 0),
    ):
        self.template_addresses = split(template)
        self.extractor_addresses = split(extractor)
        self.decode_addresses = split(decode)
        self.extra_names = served_names
        self.metrics = metrics
        self.limits = limits or Limits()
        self.security = security or ClientSecurity()
        # (tokens, ms): --stream-interval and --stream-interval-ms, held by decode
        self.stream_interval = stream_interval
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
        self.decode: ReplicaSet[GenerateStream] = ReplicaSet(
            "decode replica",
            self.decode_addresses,
            self.security,
            lambda address, ch: GenerateStream(decode_pb2_grpc.DecodeServiceStub(ch), md),
            self._read_dialect,
        )
        await self.decode.start()
        self.extractor: ReplicaSet[ExtractStream] = ReplicaSet(
            "extractor pod",
            self.extractor_addresses,
            self.security,
            lambda address, ch: ExtractStream(
                address, extractor_pb2_grpc.ExtractorServiceStub(ch), md
            ),
        )
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
        services = {"template": template, "extractor": any(extractor.values())}
        services["decode"] = any(replicas.values())
        return services, replicas

    async def decode_load(self) -> int:
        """Requests holding a decode slot now, over the serving replicas (for /health)."""
        infos = await asyncio.gather(
            *(
                decode_pb2_grpc.DecodeServiceStub(r.channel).GetModelInfo(
                    common.GetModelInfoRequest(), timeout=2, metadata=self.security.metadata
                )
                for r in self.decode.serving()
            )
        )
        return sum(i.active_requests for i in infos)

    def dialect(self) -> str:
        """The constraint dialect every serving decode replica takes."""
        return common_dialect([r.dialect for r in self.decode.serving() if r.dialect])

    @staticmethod
    def takes(dialect: str) -> Callable[[Replica], bool]:
        """Whether a decode replica takes constraints in `dialect`."""
        return lambda r: r.dialect is not None and accepts(r.dialect, dialect)

    async def _read_dialect(self, replica: Replica) -> None:
        try:
            info = await decode_pb2_grpc.DecodeServiceStub(replica.channel).GetModelInfo(
                common.GetModelInfoRequest(), timeout=5, metadata=self.security.metadata
            )
        except grpc.aio.AioRpcError as e:
            log.warning(
                "decode replica %s did not say its constraint dialect (%s); not "
                "sending it requests yet",
                replica.address,
                e.code().name,
            )
            return
        # A decode service from before dialects takes xgrammar 0.2 structural tags.
        replica.dialect = info.constraint_dialect or STRUCTURAL_TAG

    async def open_extraction(
        self, setup: extractor_pb2.ExtractSetup, request_id: str
    ) -> ExtractEntry:
        """The request's extraction on the extractor pod with the fewest of this gateway's
        requests (every pod is tried if none looks up). A pod that cannot be reached is marked
        down and the next one tried; the last one's error becomes a 503."""
        error: grpc.aio.AioRpcError | None = None
        pods = self.extractor.order() or list(self.extractor.replicas.values())
        for pod in pods:
            pod.picks += 1
            try:
                return await pod.stream.open(setup, request_id)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise from_rpc_error(e, "extractor") from None
                error = e
                self.extractor.mark_down(pod)
        if error is None:
            raise RequestError("no extractor address", status=503, type="service_unavailable")
        raise from_rpc_error(error, "extractor")

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
        dialect = self.dialect()  # constraints in the form the decode engines take
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
            run.released = True  # open() gives the place back
            run.close()
            raise
        return run


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def new_request_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)
