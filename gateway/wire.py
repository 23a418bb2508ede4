"""ChatService protos into OpenAI's JSON wire shapes (DESIGN.md, wire rules 1-2)."""

from __future__ import annotations

from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common


def usage_dict(u: common.Usage) -> dict:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def completion_dict(c: chat_pb2.ChatCompletion) -> dict:
    choices = []
    for ch in c.choices:
        m = ch.message
        message = {
            "role": "assistant",
            "content": m.content if m.HasField("content") else None,
            "refusal": None,
        }
        if m.HasField("reasoning_content"):
            message["reasoning_content"] = m.reasoning_content
        if m.tool_calls:
            message["tool_calls"] = [
                {
                    "id": t.id,
                    "type": "function",
                    "function": {
                        "name": t.function.name,
                        "arguments": t.function.arguments or "{}",
                    },
                }
                for t in m.tool_calls
            ]
        choices.append(
            {
                "index": ch.index,
                "message": message,
                "logprobs": None,
                "finish_reason": ch.finish_reason,
            }
        )
    return {
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": choices,
        "usage": usage_dict(c.usage),
    }


def chunk_dict(c: chat_pb2.ChatCompletionChunk) -> dict:
    out = {
        "id": c.id,
        "object": "chat.completion.chunk",
        "created": c.created,
        "model": c.model,
        "choices": [],
    }
    for ch in c.choices:
        d = ch.delta
        delta: dict = {}
        if d.HasField("role"):
            delta = {"role": d.role, "content": None}
        if d.HasField("content"):
            delta["content"] = d.content
        if d.HasField("reasoning_content"):
            delta["reasoning_content"] = d.reasoning_content
        if d.tool_calls:
            delta["tool_calls"] = [_tool_call_delta(t) for t in d.tool_calls]
        out["choices"].append(
            {
                "index": ch.index,
                "delta": delta,
                "logprobs": None,
                "finish_reason": ch.finish_reason if ch.HasField("finish_reason") else None,
            }
        )
    if c.HasField("usage"):
        out["usage"] = usage_dict(c.usage)
    return out


def _tool_call_delta(t: chat_pb2.ToolCallChunk) -> dict:
    d: dict = {"index": t.index}
    if t.HasField("id"):
        d["id"] = t.id
        d["type"] = "function"
        d["function"] = {"name": t.name, "arguments": t.arguments}
    else:
        d["function"] = {"arguments": t.arguments}
    return d
