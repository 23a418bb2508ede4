"""TemplateService: chat template, tool rendering, tokenization and the request's constraint."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging

import jinja2

from toolwire.constraints import xgrammar_core as xgr
from toolwire.constraints.build import build_constraint
from toolwire.constraints.dialects import DIALECTS, STRUCTURAL_TAG, engine_dialect
from toolwire.constraints.kinds import Constraint
from toolwire.constraints.outcome import Outcome
from toolwire.constraints.pool import CompilePool
from toolwire.errors import RequestError, abort_with, unavailable
from toolwire.formats import ToolFormat, detect_format, get_format
from toolwire.formats.reasoning import NONE, reasoning_mode
from toolwire.formats.thinking import template_kwargs
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.template.v1 import template_pb2 as pb
from toolwire.grpc_gen.template.v1 import template_pb2_grpc as pb_grpc
from toolwire.plumbing import request_context
from toolwire.plumbing.grpc_server import GrpcServer, wait_for_signal
from toolwire.plumbing.internal_security import ServerSecurity
from toolwire.plumbing.service_metrics import ServiceMetrics
from toolwire.request.checks import check_render
from toolwire.request.from_proto import choice_from_proto, message_to_dict, tool_from_proto
from toolwire.runtime import model_source
from toolwire.runtime.freed_memory import return_freed_memory
from toolwire.vocabulary import ErrorCode

from .config import TemplateConfig
from .stop_tokens import stop_token_ids

RECONNECT_OPTIONS = (
    ("grpc.max_connection_age_ms", 60_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
)
log = logging.getLogger("toolwire.template")


class TemplateServicer(pb_grpc.TemplateServiceServicer):
    def __init__(
        self,
        tokenizer,
        fmt: ToolFormat,
        model_id: str,
        max_model_len: int,
        vocab_size: int,
        compiles: CompilePool | None = None,
        stop_ids: list[int] | None = None,
    ):
        self.tokenizer = tokenizer
        self.format = fmt
        self.model_id = model_id
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.stop_ids = stop_ids if stop_ids is not None else stop_token_ids(tokenizer, fmt)
        self.compiles = compiles  # RenderChat's constraint check (render() alone needs none)
        self.renders = 0  # RenderChat calls (toolwire_template_renders)

    def render(self, request: pb.RenderChatRequest) -> pb.RenderChatResponse:
        check_render(request)  # the gateway's checks, for callers that come here directly
        messages = [message_to_dict(m) for m in request.messages]
        tools = [tool_from_proto(t) for t in request.tools]
        choice = choice_from_proto(request.tool_choice, bool(tools))
        parallel = request.parallel_tool_calls if request.HasField("parallel_tool_calls") else True
        effort = request.reasoning_effort if request.HasField("reasoning_effort") else None
        switches = template_kwargs(self.tokenizer, effort, self.format.own_switch)
        try:
            prompt = self.format.render(self.tokenizer, messages, tools, choice.mode, switches)
        except jinja2.TemplateError as e:  # the model's own template refuses this conversation
            raise RequestError(
                f"The model's chat template cannot render these messages: {e}", param="messages"
            ) from None
        # Thinking switched off: the constraint lets no reasoning block open.
        reasoning = NONE if effort == "none" else reasoning_mode(self.tokenizer, prompt)
        constraint = build_constraint(
            self.format,
            tools,
            choice,
            parallel,
            request.response_format,
            reasoning,
            any(m.get("role") == "tool" for m in messages),
        )
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        if len(ids) >= self.max_model_len:
            raise RequestError(
                f"This model's maximum context length is {self.max_model_len} tokens; the "
                f"messages take {len(ids)}.",
                param="messages",
                code=ErrorCode.CONTEXT_LENGTH_EXCEEDED,
            )
        return pb.RenderChatResponse(
            prompt_token_ids=ids,
            stop_token_ids=self.stop_ids,
            tool_format=self.format.name,
            constraint=constraint,
            prompt_text=prompt,
            reasoning=reasoning,
        )

    async def RenderChat(self, request, context):
        request_context.bind(context)
        self.renders += 1
        try:
            # Rendering takes milliseconds of CPU: keep it off the event loop.
            dialect = request.constraint_dialect or STRUCTURAL_TAG
            if dialect not in DIALECTS:
                raise RequestError(
                    f"the decode engine asks for constraint dialect {dialect!r}, which this "
                    f"template service cannot build (it builds {', '.join(DIALECTS)}); run "
                    "matching toolwire versions",
                    param=None,
                    code=ErrorCode.UNKNOWN_CONSTRAINT_DIALECT,
                    status=500,
                )
            response = await asyncio.to_thread(self.render, request)
            if response.HasField("constraint"):
                response.constraint.CopyFrom(
                    await self.check_constraint(response.constraint, bool(request.tools), dialect)
                )
            return response
        except RequestError as e:
            await abort_with(context, e)

    async def check_constraint(
        self, c: common.Constraint, has_tools: bool, dialect: str
    ) -> common.Constraint:
        """The constraint in the engine's dialect; refuse (400) one xgrammar cannot compile, or
        not within the deadline, or that the dialect cannot state."""
        param = "tools" if has_tools else "response_format"
        compiles, constraint = self.compiles, Constraint.from_proto(c)
        assert compiles is not None, "RenderChat runs on a servicer built with its compile pool"
        assert constraint is not None, "render() returned a constraint with a kind"
        result = await compiles.check(constraint, dialect)
        if result.outcome is Outcome.TIMEOUT:
            raise RequestError(
                f"The schema in '{param}' did not compile within "
                f"{compiles.timeout_s:g} s (--grammar-timeout); simplify it (fewer "
                "properties with patterns, smaller repetition bounds)",
                param=param,
                code=ErrorCode.SCHEMA_TOO_COMPLEX,
            )
        if result.outcome is Outcome.UNAVAILABLE:
            raise unavailable(
                f"The constraint for '{param}' could not be compiled: {result.message} "
                "(the template service's log says why); try again"
            )
        if result.outcome is Outcome.INVALID:
            raise RequestError(
                f"Invalid schema: {result.message}", param=param, code=ErrorCode.INVALID_SCHEMA
            )
        if result.outcome is Outcome.DIALECT_SCHEMA:  # a pattern in a schema, not the format
            raise RequestError(
                f"Invalid schema for this model's decode engine (constraint dialect "
                f"{dialect}): {result.message}. Use ASCII in character classes, or set strict "
                "to false.",
                param=param,
                code=ErrorCode.UNSUPPORTED_BY_ENGINE,
            )
        if result.outcome is Outcome.DIALECT:
            raise RequestError(
                f"This request cannot be enforced by the decode engine's constrained decoding "
                f"(constraint dialect {dialect}): {result.message}. With the {self.format.name} "
                "tool format that engine enforces tool_choice 'required' or a named function.",
                param="tool_choice" if has_tools else "messages",
                code=ErrorCode.UNSUPPORTED_BY_ENGINE,
            )
        assert result.constraint is not None, "an OK outcome carries its constraint"
        return result.constraint.to_proto()

    async def Tokenize(self, request, context):
        ids = self.tokenizer.encode(request.text, add_special_tokens=request.add_special_tokens)
        return pb.TokenizeResponse(token_ids=ids)

    async def Detokenize(self, request, context):
        text = self.tokenizer.decode(
            list(request.token_ids), skip_special_tokens=request.skip_special_tokens
        )
        return pb.DetokenizeResponse(text=text)

    async def GetModelInfo(self, request, context):
        return common.ModelInfo(
            model_id=self.model_id,
            tool_format=self.format.name,
            max_model_len=self.max_model_len,
            vocab_size=self.vocab_size,
            stop_token_ids=self.stop_ids,
        )


def model_config(source: model_source.ModelSource) -> tuple[int, int]:
    """(max_model_len, vocab_size) from the model's config, without loading weights."""
    limit, vocab = model_source.config_sizes(source)
    return limit or 4096, vocab


def resolve_format(name: str | None, tokenizer) -> ToolFormat:
    if name:
        return get_format(name, tokenizer)
    detected = detect_format(tokenizer)
    if detected is None:
        raise SystemExit(
            "cannot tell this model's tool format from its chat template; name "
            "it with --tool-format"
        )
    return get_format(detected, tokenizer)


async def serve(args) -> None:
    security = ServerSecurity.from_args(args)
    security.check_address(args.host)  # before the model loads: fail fast
    config = TemplateConfig.from_args(args)
    version = importlib.metadata.version("xgrammar")
    if engine_dialect(version) != STRUCTURAL_TAG:  # it writes every dialect from 0.2's forms
        raise SystemExit(
            f"the template service builds constraints with xgrammar 0.2; this "
            f"environment has {version} (pip install 'xgrammar==0.2.8')"
        )
    source = model_source.resolve(config.model)
    compiles = CompilePool(workers=config.grammar_workers, timeout_s=config.grammar_timeout)
    compiles.spawn()  # the workers import xgrammar while this process loads the tokenizer
    tokenizer = model_source.load_tokenizer(source)
    max_len, vocab = model_config(source)
    # --served-model-name only adds aliases, at the gateway: the model keeps its own id.
    fmt = resolve_format(config.tool_format, tokenizer)
    stop_ids = stop_token_ids(tokenizer, fmt, None if source.gguf_file else source.folder)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=stop_ids)
    metrics = ServiceMetrics(source.default_id)
    compile_seconds = metrics.histogram(
        "toolwire_constraint_compile_seconds", "Compiling one request's constraint (cache misses)"
    )
    compiles.observe = compile_seconds.observe
    await compiles.start(info.serialize_json())
    servicer = TemplateServicer(
        tokenizer,
        fmt,
        source.default_id,
        config.max_model_len or max_len,
        vocab,
        compiles,
        stop_ids,
    )
    # Each gateway connection is closed (gracefully) after a minute: the gateway's round_robin
    # channel then resolves the headless Service again and finds pods the HPA added since.
    server = GrpcServer(f"{args.host}:{args.port}", security, RECONNECT_OPTIONS)
    server.add(pb_grpc.add_TemplateServiceServicer_to_server, servicer, pb.DESCRIPTOR)
    await server.start()
    return_freed_memory()
    metrics.counter(
        "toolwire_template_renders",
        "RenderChat calls served (gateways spread them over every template pod)",
        lambda: servicer.renders,
    )
    metrics.counter(
        "toolwire_constraint_cache_misses", "Constraints compiled", lambda: compiles.compiles
    )
    metrics.counter(
        "toolwire_constraint_cache_hits",
        "Constraints found in the compile cache",
        lambda: compiles.cache_hits,
    )
    metrics.counter(
        "toolwire_constraint_compile_timeouts",
        "Constraints refused for compiling past --grammar-timeout",
        lambda: compiles.timeouts,
    )
    metrics.gauge(
        "toolwire_grammar_workers",
        "Constraint-compile worker processes running (one always; up to --grammar-workers)",
        lambda: compiles.running,
    )
    metrics.serve(args.metrics_port, args.host)
    log.info("template service on %s:%s (format %s)", args.host, args.port, servicer.format.name)
    await wait_for_signal()
    await server.stop()
    compiles.close()
