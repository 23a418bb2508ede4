"""schemathesis against the running gateway, from its own /openapi.json: generated requests,
valid and invalid, never get a 5xx, and every 4xx carries an OpenAI error body. Examples are
bounded and completions capped at a few tokens, so the whole run takes about a minute."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from toolwire.request.limits import Limits

MAX_TOKENS = 3


def _bound(case) -> None:
    """Cap generation: a valid request is answered in a few tokens, not up to the context."""
    body = case.body
    if not isinstance(body, dict):
        return
    capped = False
    keys = (
        ("max_output_tokens",)
        if case.path == "/v1/responses"
        else ("max_tokens", "max_completion_tokens")
    )
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            body[key] = min(value, MAX_TOKENS)
            capped = True
        elif key in body and value is None:
            del body[key]  # null means "up to the context": minutes of decoding
        elif key in body:
            capped = True  # an invalid value: the request is refused, nothing decodes
    if not capped:
        body[keys[0] if case.path == "/v1/responses" else "max_tokens"] = MAX_TOKENS


def _is_openai_error(text: str) -> bool:
    try:
        err = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (
        isinstance(err.get("message"), str)
        and isinstance(err.get("type"), str)
        and {"param", "code"} <= err.keys()
    )


POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# (method, path, examples, mode): invalid inputs only where an operation takes any.
CASES = [
    ("POST", "/v1/chat/completions", 30, POSITIVE),
    ("POST", "/v1/chat/completions", 30, NEGATIVE),
    ("GET", "/v1/models", 3, POSITIVE),
    ("GET", "/v1/models/{model}", 10, POSITIVE),
    ("GET", "/v1/models/{model}", 10, NEGATIVE),
    ("GET", "/health", 3, POSITIVE),
    ("POST", "/v1/responses", 20, POSITIVE),
    ("POST", "/v1/responses", 20, NEGATIVE),
    ("GET", "/v1/responses/{response_id}", 5, POSITIVE),
    ("GET", "/v1/responses/{response_id}/input_items", 10, NEGATIVE),
    ("DELETE", "/v1/responses/{response_id}", 5, POSITIVE),
]


@pytest.mark.parametrize(
    "method,path,examples,mode", CASES, ids=[f"{m} {p} {g.value}" for m, p, _, g in CASES]
)
def test_no_5xx_and_every_4xx_is_an_openai_error(stack, method, path, examples, mode):
    # The schema is loaded from the running gateway (the pytest plugin's lazy fixture loader
    # does not work with this pytest), and each operation's strategy drives hypothesis.
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{stack.port}/openapi.json")
    operation = schema[path][method]

    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        if (
            mode == POSITIVE
            and isinstance(case.body, dict)
            and {"messages", "input"} & case.body.keys()
        ):
            case.body["model"] = stack.model  # a served model, so requests reach the model
        statuses.append(_check(case, stack))

    check()
    if mode == POSITIVE and path == "/v1/chat/completions":
        # Not vacuous: some generated requests are served end to end.
        assert statuses.count(200) >= 5, statuses


def _check(case, stack) -> int:
    _bound(case)
    response = case.call(
        base_url=f"http://127.0.0.1:{stack.port}",
        timeout=120,
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )
    detail = (
        f"{case.method} {case.path} {str(case.body)[:500]} -> {response.status_code} "
        f"{response.text[:500]}"
    )
    assert response.status_code < 500, detail
    if response.status_code >= 400 and case.path != "/health":
        assert _is_openai_error(response.text), detail
    if response.status_code == 413:
        assert len(json.dumps(case.body)) > Limits().max_body_bytes
    if response.status_code == 200 and "text/event-stream" in response.headers.get(
        "content-type", ""
    ):
        events = [ln for ln in response.text.splitlines() if ln.startswith("data: ")]
        if case.path == "/v1/responses":  # exactly one terminal event, last
            last = json.loads(events[-1][6:])["type"]
            assert last in ("response.completed", "response.incomplete", "response.failed"), detail
        else:
            assert events[-1] == "data: [DONE]" or _is_openai_error(events[-1][6:]), detail
    return response.status_code
