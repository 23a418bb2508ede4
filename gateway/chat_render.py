"""Chat Completions as renderings of a run's events (events.py): chunks, SSE, one completion.

Why here and not in the run: the run knows what the model wrote; how Chat Completions shows it
(a role chunk first, a call's id and name in its first chunk with empty arguments, the finish in
a chunk of its own, usage only when asked) is this presentation's rule. The gRPC ChatService
takes the chunk protos; REST's SSE writes a content-only chunk from pre-rendered bytes
(wire.content_sse), any other through the chunk proto; the non-streamed response is the same
events accumulated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.vocabulary import FinishReason
from toolwire.wire_enums import set_finish

from . import events as ev
from .run import Run
from .wire import chunk_sse, content_prefix, content_sse


class _Chunks:
    """A run's chunk protos, with its id, created time and model on each."""

    __slots__ = ("run",)

    def __init__(self, run: Run):
        self.run = run

    def chunk(
        self, delta: chat_pb2.Delta | None = None, finish: str | None = None
    ) -> chat_pb2.ChatCompletionChunk:
        run = self.run
        choice = chat_pb2.ChunkChoice(index=0, delta=delta or chat_pb2.Delta())
        if finish:
            set_finish(choice, finish)
        return chat_pb2.ChatCompletionChunk(
            id=run.id,
            object="chat.completion.chunk",
            created=run.created,
            model=run.req.model,
            choices=[choice],
        )

    def call(self, index: int, custom: bool, **fields) -> chat_pb2.ChatCompletionChunk:
        return self.chunk(
            chat_pb2.Delta(
                tool_calls=[chat_pb2.ToolCallChunk(index=index, custom=custom, **fields)]
            )
        )

    def usage(self, u: ev.Usage) -> chat_pb2.ChatCompletionChunk:
        run = self.run
        return chat_pb2.ChatCompletionChunk(
            id=run.id,
            object="chat.completion.chunk",
            created=run.created,
            model=run.req.model,
            usage=usage_proto(u),
        )


def usage_proto(u: ev.Usage) -> common.Usage:
    return common.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        cached_tokens=u.cached_tokens,
    )


async def chat_items(run: Run) -> AsyncIterator[str | chat_pb2.ChatCompletionChunk]:
    """The stream in OpenAI's order: a content-only chunk as its text (SSE writes it from bytes),
    any other as a ChatCompletionChunk. A run that failed raises its error after what it
    delivered."""
    chunks = _Chunks(run)
    yield chunks.chunk(chat_pb2.Delta(role="assistant"))
    async for e in run.events():
        if isinstance(e, ev.Content):  # most events: first
            yield e.text
        elif isinstance(e, ev.Reasoning):
            yield chunks.chunk(chat_pb2.Delta(reasoning_content=e.text))
        elif isinstance(e, ev.CallOpened):
            yield chunks.call(
                e.index,
                e.custom,
                id=e.id,
                type="custom" if e.custom else "function",
                name=e.name,
                arguments="",
            )
        elif isinstance(e, ev.Arguments):
            yield chunks.call(e.index, False, arguments=e.text)
        elif isinstance(e, ev.CustomInput):
            yield chunks.call(e.index, True, arguments=e.text)
        elif isinstance(e, ev.Finish):
            yield chunks.chunk(finish=e.reason)
        elif isinstance(e, ev.Usage):
            if run.req.include_usage:
                yield chunks.usage(e)
        elif isinstance(e, ev.Failed):
            raise e.error


async def chat_chunks(run: Run) -> AsyncIterator[chat_pb2.ChatCompletionChunk]:
    """The stream as ChatCompletionChunk protos (the gRPC ChatService)."""
    chunks = _Chunks(run)
    async for item in chat_items(run):
        yield chunks.chunk(chat_pb2.Delta(content=item)) if isinstance(item, str) else item


async def chat_sse(run: Run) -> AsyncIterator[bytes]:
    """The stream as SSE events, `data: [DONE]` last (REST)."""
    prefix = content_prefix(run.id, run.created, run.req.model)
    async for item in chat_items(run):
        # orjson: compact UTF-8 as OpenAI sends it, several times json's speed.
        yield content_sse(prefix, item) if isinstance(item, str) else chunk_sse(item)
    yield b"data: [DONE]\n\n"


async def chat_completion(run: Run) -> chat_pb2.ChatCompletion:
    """The non-streamed response: the run's events accumulated into one message."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, common.ToolCall] = {}
    finish: str = FinishReason.STOP
    usage = common.Usage()
    async for e in run.events():
        if isinstance(e, ev.Content):
            content.append(e.text)
        elif isinstance(e, ev.Reasoning):
            reasoning.append(e.text)
        elif isinstance(e, ev.CallOpened):
            call = calls[e.index] = common.ToolCall(id=e.id)
            if e.custom:
                call.type = "custom"
                call.custom.name = e.name
            else:
                call.type = "function"
                call.function.name = e.name
        elif isinstance(e, ev.Arguments):
            calls[e.index].function.arguments += e.text
        elif isinstance(e, ev.CustomInput):
            calls[e.index].custom.input += e.text
        elif isinstance(e, ev.Finish):
            finish = e.reason
        elif isinstance(e, ev.Usage):
            usage = usage_proto(e)
        elif isinstance(e, ev.Failed):
            raise e.error
    message = chat_pb2.ChoiceMessage(role="assistant", tool_calls=[calls[i] for i in sorted(calls)])
    if content or not calls:
        message.content = "".join(content)
    if reasoning:
        message.reasoning_content = "".join(reasoning)
    choice = chat_pb2.Choice(index=0, message=message)
    set_finish(choice, finish)
    return chat_pb2.ChatCompletion(
        id=run.id,
        object="chat.completion",
        created=run.created,
        model=run.req.model,
        choices=[choice],
        usage=usage,
    )
