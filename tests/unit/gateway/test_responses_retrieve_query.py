"""GET /v1/responses/{id}'s query (gateway/responses/routes.py): what toolwire cannot honor is a
400 naming it (the SDK's `retrieve(stream=True)` read a JSON body as an empty stream), `include`
is checked as a create's is, and reasoning.encrypted_content is written as the create writes it."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from toolwire.errors import RequestError
from toolwire.gateway.responses.routes import included, retrieve_query, with_encrypted_reasoning
from toolwire.gateway.responses.to_chat import decode_reasoning


@pytest.mark.parametrize(
    "query, param",
    [
        ("stream=true", "stream"),
        ("stream=True", "stream"),
        ("stream=1", "stream"),
        ("stream=true&starting_after=3", "stream"),
        ("starting_after=3", "starting_after"),
        ("include[]=message.output_text.logprobs", "include[0]"),
        ("include[]=file_search_call.results&include[]=nope", "include[1]"),
        ("include=nope", "include[0]"),
    ],
)
def test_what_cannot_be_honored_is_refused_by_name(query, param):
    with pytest.raises(RequestError) as e:
        retrieve_query(QueryParams(query))
    assert e.value.param == param and e.value.status == 400


@pytest.mark.parametrize(
    "query, encrypted",
    [
        ("", False),
        ("stream=false", False),
        ("include[]=web_search_call.results", False),
        ("include[]=reasoning.encrypted_content", True),
        ("include[]=code_interpreter_call.outputs&include[]=reasoning.encrypted_content", True),
        ("include_obfuscation=false", False),
    ],
)
def test_what_is_served(query, encrypted):
    assert retrieve_query(QueryParams(query)) is encrypted


def test_included_lists_both_spellings():
    q = QueryParams("include[]=reasoning.encrypted_content&include=web_search_call.results")
    assert included(q) == ["reasoning.encrypted_content", "web_search_call.results"]


def test_encrypted_reasoning_is_the_items_own_text():
    reasoning = {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [],
        "content": [
            {"type": "reasoning_text", "text": "think "},
            {"type": "reasoning_text", "text": "hard"},
        ],
    }
    kept = {**reasoning, "id": "rs_2", "encrypted_content": "already"}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    response = {"id": "resp_1", "output": [reasoning, kept, message]}
    out = with_encrypted_reasoning(response)
    first, second, third = out["output"]
    assert decode_reasoning(first["encrypted_content"]) == "think hard"
    assert second["encrypted_content"] == "already" and third == message
    assert "encrypted_content" not in reasoning  # the stored response is not changed
    assert out["id"] == "resp_1"
