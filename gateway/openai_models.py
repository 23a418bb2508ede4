"""Pydantic models of the OpenAI chat completion request, as the official SDK sends it.

They check shape only (types, and integers the proto can hold); what a value means is checked
on the proto, for REST and gRPC alike (toolwire/request/checks.py). The rules that check states
are repeated here as JSON Schema annotations, for the OpenAPI document, without validating."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from toolwire.constraints import schema_checks
from toolwire.request import checks as rules

_NAME: JsonDict = {"pattern": schema_checks.NAME_PATTERN}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: str


class CustomCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    input: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str
    type: Literal["function", "custom"] = "function"
    function: FunctionCall | None = None  # type function
    custom: CustomCall | None = None  # type custom


class Message(BaseModel):
    # The SDK echoes its own message objects back, with fields such as annotations, audio and
    # function_call set to null: accept and ignore what does not change the prompt.
    model_config = ConfigDict(extra="ignore")
    role: str = Field(json_schema_extra={"enum": list(rules.ROLES)})
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None


class FunctionDefinition(_Model):
    name: str = Field(json_schema_extra=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Model):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Model):
    name: str


class NamedToolChoice(_Model):
    type: Literal["function"]
    function: NamedFunction


class CustomToolChoice(_Model):
    type: Literal["custom"]
    custom: NamedFunction


class AllowedTools(_Model):
    # Shape only: the mode's value and the entries' names are checked on the proto.
    mode: str = Field(json_schema_extra={"enum": ["auto", "required"]})
    tools: list[dict[str, Any]]


class AllowedToolChoice(_Model):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


class Grammar(_Model):
    syntax: Literal["lark", "regex"]
    definition: str


class CustomFormat(_Model):
    type: Literal["text", "grammar"]
    grammar: Grammar | None = None


class CustomDefinition(_Model):
    name: str = Field(json_schema_extra=_NAME)
    description: str | None = None
    format: CustomFormat | None = None


class CustomTool(_Model):
    type: Literal["custom"]
    custom: CustomDefinition


class JSONSchemaSpec(_Model):
    name: str = Field(json_schema_extra=_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Model):
    type: str = Field(json_schema_extra={"enum": list(schema_checks.RESPONSE_FORMATS)})
    json_schema: JSONSchemaSpec | None = None


class StreamOptions(_Model):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str
    messages: list[Message] = Field(json_schema_extra={"minItems": 1})
    tools: list[FunctionTool | CustomTool] | None = None
    tool_choice: (
        Literal["auto", "none", "required"]
        | NamedToolChoice
        | CustomToolChoice
        | AllowedToolChoice
        | None
    ) = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = Field(
        default=None, json_schema_extra={"enum": list(rules.REASONING_EFFORTS)}
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(
        default=None,
        json_schema_extra={"minimum": rules.TEMPERATURE[0], "maximum": rules.TEMPERATURE[1]},
    )
    top_p: float | None = Field(
        default=None,
        json_schema_extra={"exclusiveMinimum": rules.TOP_P[0], "maximum": rules.TOP_P[1]},
    )
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: str | list[str] | None = None
    # Past any context window; the context check gives the precise refusal.
    # Above 0: what a uint32 holds; 0 itself is the check's to refuse.
    max_tokens: int | None = Field(
        default=None, ge=0, le=2**31 - 1, json_schema_extra={"minimum": 1}
    )
    max_completion_tokens: int | None = Field(
        default=None, ge=0, le=2**31 - 1, json_schema_extra={"minimum": 1}
    )
    # Accepted so that SDK requests pass; each is checked by `unsupported_parameters`.
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


def unsupported_parameters(req: ChatCompletionRequest) -> tuple[str, str] | None:
    """(param, message) for the first parameter toolwire would otherwise silently ignore."""
    if req.model_extra:
        name = next(iter(req.model_extra))
        if name in ("functions", "function_call"):
            return name, f"'{name}' is deprecated and not supported; use 'tools' and 'tool_choice'"
        return name, f"Unrecognized request argument supplied: {name}"
    checks = [
        ("n", req.n not in (None, 1), "n > 1 is not supported"),
        ("logprobs", bool(req.logprobs), "logprobs is not supported"),
        ("top_logprobs", req.top_logprobs is not None, "top_logprobs is not supported"),
        (
            "presence_penalty",
            req.presence_penalty not in (None, 0),
            "presence_penalty is not supported",
        ),
        (
            "frequency_penalty",
            req.frequency_penalty not in (None, 0),
            "frequency_penalty is not supported",
        ),
        ("logit_bias", bool(req.logit_bias), "logit_bias is not supported"),
        ("store", bool(req.store), "store is not supported"),
    ]
    for param, bad, message in checks:
        if bad:
            return param, message
    for i, m in enumerate(req.messages):
        for j, part in enumerate(m.content if isinstance(m.content, list) else []):
            # A part of a served type carries its text (other types: the proto check).
            if part.type in rules.TEXT_PARTS and part.text is None:
                return (
                    f"messages[{i}].content[{j}].text",
                    f"a content part of type {part.type!r} needs its text",
                )
    return None
