"""The response shapes are defined once (gateway/response_types.py): what wire.py writes from
the protos, and what OpenAI itself streamed (the recorded streams), both validate against the
OpenAPI document generated from that definition."""

from __future__ import annotations

import json
import os
import pathlib

import jsonschema
import pytest

from toolwire.gateway import wire
from toolwire.gateway.openapi import openapi_document
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.limits import Limits

RECORDED = pathlib.Path(
    os.environ.get(
        "TOOLWIRE_RECORDED_STREAMS",
        pathlib.Path(__file__).resolve().parents[4] / "shared/reference/openai-recorded-streams",
    )
)
COMPONENTS = openapi_document(Limits())["components"]


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": COMPONENTS}
    return jsonschema.Draft202012Validator(schema)


def _completion() -> chat_pb2.ChatCompletion:
    call = common.ToolCall(id="call_1", type="function")
    call.function.name, call.function.arguments = "get_weather", '{"location": "Paris"}'
    custom = common.ToolCall(id="call_2", type="custom")
    custom.custom.name, custom.custom.input = "run_sql", "SELECT 1"
    c = chat_pb2.ChatCompletion(id="chatcmpl-1", created=1, model="m")
    ch = c.choices.add(index=0, finish_reason="tool_calls")
    ch.message.tool_calls.extend([call, custom])
    c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens = 10, 5, 15
    return c


def test_a_completion_as_written_is_the_documented_shape():
    body = wire.completion_dict(_completion())
    _validator("ChatCompletion").validate(body)
    body["choices"][0]["finish_reason"] = "abort"  # never sent: the schema refuses it
    with pytest.raises(jsonschema.ValidationError):
        _validator("ChatCompletion").validate(body)


def test_chunks_as_written_are_the_documented_shape():
    c = chat_pb2.ChatCompletionChunk(id="chatcmpl-1", created=1, model="m")
    ch = c.choices.add(index=0)
    ch.delta.role = "assistant"
    piece = ch.delta.tool_calls.add(index=0, id="call_1", name="get_weather", arguments="")
    assert piece.HasField("id")
    more = chat_pb2.ChatCompletionChunk(id="chatcmpl-1", created=1, model="m")
    more.choices.add(index=0).delta.tool_calls.add(index=0, arguments='{"loc')
    last = chat_pb2.ChatCompletionChunk(id="chatcmpl-1", created=1, model="m")
    last.choices.add(index=0, finish_reason="tool_calls")
    for chunk in (c, more, last):
        _validator("ChatCompletionChunk").validate(wire.chunk_dict(chunk))


def test_an_error_body_is_the_documented_shape():
    body = {"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}
    _validator("Error").validate(body)
    with pytest.raises(jsonschema.ValidationError):
        _validator("Error").validate({"error": {"message": "m"}})


@pytest.mark.skipif(not RECORDED.is_dir(), reason="recorded OpenAI streams not present")
def test_what_openai_streamed_is_the_documented_chunk_shape():
    seen = 0
    for path in sorted(RECORDED.iterdir()):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event.get("object") == "chat.completion.chunk":
                    _validator("ChatCompletionChunk").validate(event)
                    seen += 1
    assert seen > 0
