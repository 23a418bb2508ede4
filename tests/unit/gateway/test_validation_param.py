"""A pydantic error's location as the OpenAI `param` (gateway/app.py _param): the location is
walked along the request's models, and a union's part (the alternative pydantic tried: a class
name, `str`, `list[...]`, `literal[...]`) is left out, whatever the field names look like."""

from __future__ import annotations

import pydantic
import pytest

from toolwire.gateway.app import validation_error
from toolwire.gateway.openai_models import ChatCompletionRequest
from toolwire.vocabulary import ErrorCode

MSG = [{"role": "user", "content": "hi"}]
FN = {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"tool_choice": "bogus"}, "tool_choice"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "strict": "x"}}]},
            "tools[0].function.strict",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "bogus": 1}}]},
            "tools[0].function.bogus",
        ),
        ({"tools": [{"type": "x"}]}, "tools[0].type"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"stream_options": {"include_usage": "x"}}, "stream_options.include_usage"),
        ({"stop": [1]}, "stop"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": 1}}},
            "response_format.json_schema.schema",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f"}}]}
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"max_tokens": 2**32}, "max_tokens"),
    ],
)
def test_the_param_is_the_field(extra, param):
    with pytest.raises(pydantic.ValidationError) as e:
        ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **extra})
    err = validation_error(e.value)
    assert err.param == param
    assert err.code is (
        ErrorCode.MISSING_REQUIRED_PARAMETER if "arguments" in param else ErrorCode.INVALID_VALUE
    )


def test_a_missing_field_has_its_code():
    with pytest.raises(pydantic.ValidationError) as e:
        ChatCompletionRequest.model_validate({"messages": MSG})
    err = validation_error(e.value)
    assert (err.param, err.code) == ("model", "missing_required_parameter")


@pytest.mark.parametrize(
    "loc,param",
    [
        (
            ("tools", 0, "CustomTool", "custom", "format", "grammar", "syntax"),
            "tools[0].custom.format.grammar.syntax",
        ),
        (("messages", 0, "content", "list[ContentPart]", 0, "text"), "messages[0].content[0].text"),
        (("stop", "list[str]", 0), "stop[0]"),
        (("tool_choice", "NamedToolChoice", "function", "name"), "tool_choice.function.name"),
        (
            ("tool_choice", "AllowedToolChoice", "allowed_tools", "tools", 0),
            "tool_choice.allowed_tools.tools[0]",
        ),
    ],
)
def test_locations_under_a_union(loc, param):
    from toolwire.gateway.app import _param

    assert _param(loc) == param
