"""The words toolwire's parts say to each other, each written once.

`StrEnum`s, so a member is the string it names: it goes into JSON, a log line or a proto
string field as that string, and compares equal to it. Where a word crosses a gRPC wire the
proto has an enum of its own beside the old string field (common.proto); toolwire/wire_enums.py
is the only place the two spellings meet.

This module is a leaf: it imports nothing of toolwire, so every layer may import it.
"""

from __future__ import annotations

from enum import StrEnum


class FinishReason(StrEnum):
    """Why an output ended. The decode service says STOP, LENGTH or ABORT; the extractor turns a
    STOP whose text held calls into TOOL_CALLS, as OpenAI reports it."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"  # cancelled, or the service failed: never reaches a client as a finish
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"  # OpenAI's; toolwire filters nothing, so never sent


class ToolChoiceMode(StrEnum):
    """What `tool_choice` asks of the model."""

    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    NAMED = "named"  # one function or custom tool, by name


class ReasoningMode(StrEnum):
    """How a model family's thinking block opens a turn's output, for the constraint."""

    NONE = ""  # the model does not think (or was told not to)
    OPTIONAL = "optional"  # the model may open a thinking block first
    STARTED = "started"  # the prompt already opened it: the output starts inside it


class Dialect(StrEnum):
    """The form of decoding constraint an engine accepts (toolwire/constraints/dialects.py)."""

    STRUCTURAL_TAG = "xgrammar-structural-tag-0.2"
    EBNF = "xgrammar-ebnf-0.1.25"


class ErrorCode(StrEnum):
    """The `code` of an OpenAI-shaped error body, one member for each code toolwire sends."""

    INVALID_VALUE = "invalid_value"
    INVALID_SCHEMA = "invalid_schema"
    INVALID_GRAMMAR = "invalid_grammar"
    INVALID_API_KEY = "invalid_api_key"
    MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    UNSUPPORTED_VALUE = "unsupported_value"
    UNSUPPORTED_SCHEMA_KEYWORD = "unsupported_schema_keyword"
    UNSUPPORTED_BY_ENGINE = "unsupported_by_engine"
    UNKNOWN_CONSTRAINT_DIALECT = "unknown_constraint_dialect"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    TOO_MANY_MESSAGES = "too_many_messages"
    TOO_MANY_TOOLS = "too_many_tools"
    TOO_MANY_STOP_SEQUENCES = "too_many_stop_sequences"
    STOP_TOO_LONG = "stop_too_long"
    SCHEMA_TOO_LARGE = "schema_too_large"
    SCHEMA_TOO_DEEP = "schema_too_deep"
    SCHEMA_TOO_COMPLEX = "schema_too_complex"
    ENUM_TOO_LARGE = "enum_too_large"
    GRAMMAR_TOO_LARGE = "grammar_too_large"
    TOO_MANY_REQUESTS = "too_many_requests"
    QUEUE_FULL = "queue_full"
    QUEUE_TIMEOUT = "queue_timeout"
    SERVICE_UNAVAILABLE = "service_unavailable"
