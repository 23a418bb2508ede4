"""Constraint dialects across the running services: decode says which its engine takes, the
template builds the constraint in the dialect asked for (through its compile workers), and the
decode service decodes a grammar built for TensorRT-LLM's xgrammar as well as its own form."""

from __future__ import annotations

import json

import grpc
import jsonschema
import pytest

from toolwire.constraints.dialects import EBNF, STRUCTURAL_TAG
from toolwire.formats import Tool, get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2, decode_pb2_grpc
from toolwire.grpc_gen.template.v1 import template_pb2, template_pb2_grpc
from toolwire.plumbing.internal_security import TOKEN_KEY

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def services(stack):
    addrs = stack.service_addresses()
    channels = [grpc.insecure_channel(addrs[k]) for k in ("template", "decode")]
    yield (
        template_pb2_grpc.TemplateServiceStub(channels[0]),
        decode_pb2_grpc.DecodeServiceStub(channels[1]),
        [(TOKEN_KEY, stack.internal_token)],
    )
    for ch in channels:
        ch.close()


def render(template, md, dialect: str, choice: common.ToolChoice):
    return template.RenderChat(
        template_pb2.RenderChatRequest(
            messages=[common.ChatMessage(role="user", content="Weather in Paris, in celsius?")],
            tools=[
                common.FunctionTool(
                    name="get_weather",
                    description="Weather in a city.",
                    parameters_json=json.dumps(SCHEMA),
                    strict=True,
                )
            ],
            tool_choice=choice,
            parallel_tool_calls=False,
            constraint_dialect=dialect,
        ),
        metadata=md,
        timeout=60,
    )


def test_the_torch_engine_says_it_takes_structural_tags(services):
    _, decode, md = services
    assert (
        decode.GetModelInfo(common.GetModelInfoRequest(), metadata=md).constraint_dialect
        == STRUCTURAL_TAG
    )


@pytest.mark.parametrize("dialect", [STRUCTURAL_TAG, EBNF])
def test_a_forced_call_decodes_in_each_dialect(services, dialect):
    template, decode, md = services
    rendered = render(template, md, dialect, common.ToolChoice(function_name="get_weather"))
    kind = rendered.constraint.WhichOneof("kind")
    assert kind == ("ebnf" if dialect == EBNF else "structural_tag")
    ids, finish = [], None
    for r in decode.Generate(
        decode_pb2.GenerateRequest(
            request_id=f"dialect-{dialect}",
            prompt_token_ids=rendered.prompt_token_ids,
            sampling=decode_pb2.SamplingParams(temperature=0),
            max_tokens=80,
            stop_token_ids=rendered.stop_token_ids,
            constraint=rendered.constraint,
        ),
        metadata=md,
        timeout=120,
    ):
        if r.HasField("chunk"):
            ids += r.chunk.token_ids
        else:
            finish = r.complete.finish_reason
    text = template.Detokenize(template_pb2.DetokenizeRequest(token_ids=ids), metadata=md).text
    assert finish == "stop", text
    delta = get_format(rendered.tool_format).extractor([Tool("get_weather")]).parse_complete(text)
    assert [c.name for c in delta.calls if c.name] == ["get_weather"], text
    jsonschema.validate(json.loads("".join(c.arguments for c in delta.calls)), SCHEMA)


def test_an_unknown_dialect_is_a_deployment_error_not_a_silent_default(services):
    template, _, md = services
    with pytest.raises(grpc.RpcError) as e:
        render(template, md, "xgrammar-structural-tag-9", common.ToolChoice())
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "xgrammar-structural-tag-9" in e.value.details()
