"""The OpenAI response shapes the gateway writes, defined once.

`wire.py` builds these dicts from the ChatService protos (typed against these definitions, so
the type checker holds the builders to them), and `openapi.py` generates the document's
response schemas from the same definitions through pydantic. Field names and optionality
follow openai-python's `types/chat/` and `types/` (ChatCompletion, ChatCompletionChunk,
CompletionUsage, ErrorObject, Model).

pydantic reads TypedDicts from typing_extensions on Python 3.11."""

from __future__ import annotations

from typing import Literal, NotRequired

from typing_extensions import TypedDict

# What a client can see as a choice's finish_reason (toolwire.vocabulary.FinishReason less
# "abort", which ends a stream with an error instead).
WireFinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class ChoiceLogprobs(TypedDict, total=False):
    """OpenAI's shape; toolwire refuses `logprobs: true`, so it always sends null."""

    content: list[dict] | None
    refusal: list[dict] | None


class ResponseFunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text, "{}" for no arguments


class FunctionToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: ResponseFunctionCall


class ResponseCustomCall(TypedDict):
    name: str
    input: str


class CustomToolCall(TypedDict):
    """A custom tool's call: the raw input its grammar allowed."""

    id: str
    type: Literal["custom"]
    custom: ResponseCustomCall


ToolCall = FunctionToolCall | CustomToolCall


class PromptTokensDetails(TypedDict):
    cached_tokens: int


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: NotRequired[PromptTokensDetails]


class ResponseMessage(TypedDict):
    """The assistant message of a choice (the request's own Message is another shape)."""

    role: Literal["assistant"]
    content: str | None
    refusal: NotRequired[None]
    reasoning_content: NotRequired[str]
    tool_calls: NotRequired[list[ToolCall]]


class Choice(TypedDict):
    index: int
    message: ResponseMessage
    logprobs: NotRequired[ChoiceLogprobs | None]
    finish_reason: WireFinishReason


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: NotRequired[Usage]


class FunctionCallDelta(TypedDict):
    name: NotRequired[str]
    arguments: str


class CustomCallDelta(TypedDict):
    name: NotRequired[str]
    input: str


class ToolCallDelta(TypedDict):
    """A call's piece: the first carries id, type and name; the rest only their fragment."""

    index: int
    id: NotRequired[str]
    type: NotRequired[Literal["function", "custom"]]
    function: NotRequired[FunctionCallDelta]
    custom: NotRequired[CustomCallDelta]


class Delta(TypedDict, total=False):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str
    tool_calls: list[ToolCallDelta]


class ChunkChoice(TypedDict):
    index: int
    delta: Delta
    logprobs: NotRequired[ChoiceLogprobs | None]
    finish_reason: WireFinishReason | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[Usage]


class ErrorObject(TypedDict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(TypedDict):
    error: ErrorObject


class Model(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[Model]


# The shapes openapi.py puts in the document's components, by the name it gives them.
DOCUMENTED = {
    "ChatCompletion": ChatCompletion,
    "ChatCompletionChunk": ChatCompletionChunk,
    "Error": ErrorBody,
    "Model": Model,
    "ModelList": ModelList,
}
