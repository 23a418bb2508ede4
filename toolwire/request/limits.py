"""Request limits, checked at the gateway before any work is queued (REST and gRPC alike).

Each refusal is a 400 (413 for the body) that names the parameter and the limit, so a client
can tell what to change. Defaults are generous for real tool use; each is a gateway flag.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from toolwire.errors import RequestError
from toolwire.vocabulary import ErrorCode

if TYPE_CHECKING:  # the launcher reads Limits' flags without loading the protos
    from toolwire.grpc_gen.chat.v1 import chat_pb2


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024  # REST request body (413 above it)
    max_messages: int = 512
    max_tools: int = 128  # OpenAI's own limit
    max_schema_bytes: int = 64 * 1024  # one tool's parameters, or response_format's schema
    max_schema_depth: int = 24  # nesting of objects and arrays in one schema
    max_enum_values: int = 1024  # values in one enum
    max_stop: int = 4  # OpenAI's own limit
    max_stop_chars: int = 256  # one stop string
    max_concurrent_requests: int = 256  # in flight at the gateway; 429 above it
    # A request without max_tokens ends here, not at the end of the context: a small model that
    # loops (inside a JSON string, say) would otherwise run for minutes (vLLM takes a default
    # from the generation config, llama.cpp has -n, Ollama num_predict).
    default_max_tokens: int = 512
    max_tokens_ceiling: int = 8192  # OpenAI's "max_tokens is too large" 400 above it

    HELP = {
        "max_body_bytes": "largest REST request body in bytes (413 above it)",
        "max_messages": "most messages in one request",
        "max_tools": "most tools in one request",
        "max_schema_bytes": "largest JSON schema (a tool's parameters or response_format) "
        "or custom tool grammar",
        "max_schema_depth": "deepest nesting of objects and arrays in one schema",
        "max_enum_values": "most values in one enum of a schema",
        "max_stop": "most stop strings",
        "max_stop_chars": "longest stop string, in characters",
        "max_concurrent_requests": "requests in flight at the gateway before new ones get 429",
        "default_max_tokens": "completion tokens for a request that sets no max_tokens",
        "max_tokens_ceiling": "largest max_tokens a request may ask for (400 above it)",
    }

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        for f in fields(cls):
            p.add_argument(
                "--" + f.name.replace("_", "-"),
                type=int,
                default=f.default,
                help=f"{cls.HELP[f.name]} (default {f.default})",
            )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Limits:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def as_flags(self) -> list[str]:
        return [f"--{f.name.replace('_', '-')}={getattr(self, f.name)}" for f in fields(self)]


def _depth(value: Any) -> int:
    """Nesting depth of JSON objects and arrays (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
        else:
            deepest = max(deepest, d)
            continue
        deepest = max(deepest, d + 1)
    return deepest


def _enums(value: Any) -> Iterator[list]:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if isinstance(v.get("enum"), list):
                yield v["enum"]
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def check_schema(text: str, param: str, limits: Limits) -> None:
    if len(text.encode()) > limits.max_schema_bytes:
        raise RequestError(
            f"'{param}' is {len(text.encode())} bytes; the limit is {limits.max_schema_bytes}",
            param=param,
            code=ErrorCode.SCHEMA_TOO_LARGE,
        )
    try:
        schema = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise RequestError(f"'{param}' is not valid JSON: {e}", param=param) from None
    depth = _depth(schema)
    if depth > limits.max_schema_depth:
        raise RequestError(
            f"'{param}' nests {depth} levels deep; the limit is {limits.max_schema_depth}",
            param=param,
            code=ErrorCode.SCHEMA_TOO_DEEP,
        )
    for values in _enums(schema):
        if len(values) > limits.max_enum_values:
            raise RequestError(
                f"an enum in '{param}' has {len(values)} values; the limit is "
                f"{limits.max_enum_values}",
                param=param,
                code=ErrorCode.ENUM_TOO_LARGE,
            )


def check_limits(req: chat_pb2.ChatCompletionRequest, limits: Limits) -> None:
    """Refuse a request over any limit, naming the parameter."""
    if len(req.messages) > limits.max_messages:
        raise RequestError(
            f"'messages' has {len(req.messages)} items; the limit is {limits.max_messages}",
            param="messages",
            code=ErrorCode.TOO_MANY_MESSAGES,
        )
    if len(req.tools) > limits.max_tools:
        raise RequestError(
            f"'tools' has {len(req.tools)} items; the limit is {limits.max_tools}",
            param="tools",
            code=ErrorCode.TOO_MANY_TOOLS,
        )
    for i, tool in enumerate(req.tools):
        if tool.parameters_json:
            check_schema(tool.parameters_json, f"tools[{i}].function.parameters", limits)
        grammar = tool.custom_format.definition
        if len(grammar.encode()) > limits.max_schema_bytes:  # a custom tool's grammar
            raise RequestError(
                f"'tools[{i}].custom.format.grammar.definition' is {len(grammar.encode())} "
                f"bytes; the limit is {limits.max_schema_bytes}",
                param=f"tools[{i}].custom.format.grammar.definition",
                code=ErrorCode.GRAMMAR_TOO_LARGE,
            )
    if req.response_format.schema_json:
        check_schema(req.response_format.schema_json, "response_format.json_schema.schema", limits)
    if len(req.stop) > limits.max_stop:
        raise RequestError(
            f"'stop' has {len(req.stop)} strings; the limit is {limits.max_stop}",
            param="stop",
            code=ErrorCode.TOO_MANY_STOP_SEQUENCES,
        )
    for i, s in enumerate(req.stop):
        if len(s) > limits.max_stop_chars:
            raise RequestError(
                f"stop[{i}] is {len(s)} characters; the limit is {limits.max_stop_chars}",
                param=f"stop[{i}]",
                code=ErrorCode.STOP_TOO_LONG,
            )
        if not s:
            raise RequestError(f"stop[{i}] is empty", param=f"stop[{i}]")


def completion_budget(
    req: chat_pb2.ChatCompletionRequest, prompt_tokens: int, max_model_len: int, limits: Limits
) -> tuple[int, str]:
    """The request's completion token budget and what set it: `request` (its max_tokens),
    `server_default` (--default-max-tokens) or `context` (what the context has left).
    OpenAI's checks: max_tokens over the model's output ceiling, or with the prompt over the
    context, is a 400; a server default shrinks to fit the context instead."""
    room = max_model_len - prompt_tokens if max_model_len else None
    if req.HasField("max_completion_tokens"):
        wanted = req.max_completion_tokens
        if wanted > limits.max_tokens_ceiling:
            raise RequestError(
                f"max_tokens is too large: {wanted}. This model supports at most "
                f"{limits.max_tokens_ceiling} completion tokens.",
                param="max_tokens",
                code=ErrorCode.INVALID_VALUE,
            )
        if room is not None and wanted > room:
            raise RequestError(
                f"This model's maximum context length is {max_model_len} tokens. However, you "
                f"requested {prompt_tokens + wanted} tokens ({prompt_tokens} in the messages, "
                f"{wanted} in the completion). Please reduce the length of the messages or "
                "max_tokens.",
                param="max_tokens",
                code=ErrorCode.CONTEXT_LENGTH_EXCEEDED,
            )
        return wanted, "request"
    if room is not None and room < limits.default_max_tokens:
        return room, "context"
    return limits.default_max_tokens, "server_default"
