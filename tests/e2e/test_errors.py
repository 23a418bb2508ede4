"""OpenAI-style error bodies with the right status and the parameter named."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.tools_fixtures import WEATHER

MSG = [{"role": "user", "content": "hi"}]


def _post(stack, body, key="default"):
    headers = (
        {}
        if key is None
        else {"Authorization": f"Bearer {stack.api_key if key == 'default' else key}"}
    )
    return httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=120)


def _error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_401_without_a_valid_key(stack, key):
    err = _error(_post(stack, {"model": stack.model, "messages": MSG}, key=key), 401)
    assert err["code"] == "invalid_api_key"
    assert httpx.get(f"{stack.base_url}/models").status_code == 401


def test_401_through_the_sdk(stack):
    bad = openai.OpenAI(base_url=stack.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=stack.model, messages=MSG)


def test_404_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MSG)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


STRICT_UNIQUE = {
    "type": "function",
    "function": {
        "name": "tags",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}
            },
            "required": ["tags"],
            "additionalProperties": False,
        },
    },
}

BAD_REQUESTS = [
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"tools": [STRICT_UNIQUE], "tool_choice": "required"}, "tools[0].function.parameters"),
    (
        {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
        "tools[0].function.name",
    ),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ]
        },
        "messages[0].content[0].type",
    ),
    ({"messages": []}, "messages"),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "strict": True,
                    "schema": {"type": "object", "not": {"required": ["a"]}},
                },
            }
        },
        "response_format.json_schema.schema",
    ),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
]


@pytest.mark.parametrize("extra,param", BAD_REQUESTS, ids=[p for _, p in BAD_REQUESTS])
def test_400_names_the_parameter(stack, extra, param):
    body = {"model": stack.model, "messages": MSG, **extra}
    err = _error(_post(stack, body), 400)
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"


def test_unenforceable_keyword_is_named(stack):
    err = _error(
        _post(stack, {"model": stack.model, "messages": MSG, "tools": [STRICT_UNIQUE]}), 400
    )
    assert "uniqueItems" in err["message"]


def test_400_for_a_body_that_is_not_json(stack):
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {stack.api_key}", "Content-Type": "application/json"},
    )
    _error(r, 400)


def test_unknown_path_is_a_json_404(stack):
    _error(httpx.get(f"{stack.base_url}/nothing-here"), 404)


def test_a_wrong_method_is_a_json_405_with_allow(stack):
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    for method, path, allowed in (
        ("GET", "/chat/completions", "POST"),
        ("PUT", "/responses/resp_x", "GET, DELETE, HEAD"),  # Starlette answers HEAD for GET
        ("POST", "/responses/resp_x/input_items", "GET, HEAD"),
    ):
        r = httpx.request(method, f"{stack.base_url}{path}", headers=headers)
        err = _error(r, 405)
        assert err["message"] == f"Invalid method for URL ({method} /v1{path})"
        assert set(r.headers["allow"].split(", ")) == set(allowed.split(", "))  # any order
