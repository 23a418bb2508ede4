"""Health, metrics, models, cancellation, sampling parameters and response_format."""

from __future__ import annotations

import json
import time

import httpx
import jsonschema

from tests.tools_fixtures import WEATHER


def test_health_reports_every_service(stack):
    h = stack.health()
    assert h["status"] == "ok"
    assert h["services"] == {"template": True, "decode": True, "extractor": True}


def test_models_lists_the_served_names(client, stack):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "SmolLM2-135M-Instruct" and stack.model in ids
    assert client.models.retrieve(stack.model).id == stack.model


def test_alias_and_served_id_both_answer(client):
    for name in ("SmolLM2-135M-Instruct", "gpt-4o-mini"):
        r = client.chat.completions.create(
            model=name, max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        )
        assert r.model == name


def test_metrics_count_requests_tokens_and_calls(client, stack):
    client.chat.completions.create(
        model=stack.model,
        tools=[WEATHER],
        tool_choice="required",
        messages=[{"role": "user", "content": "Paris?"}],
        parallel_tool_calls=False,
        temperature=0,
    )
    text = httpx.get(f"http://127.0.0.1:{stack.port}/metrics").text
    assert any(
        ln.startswith("toolwire_requests_total{") and 'api="rest"' in ln and 'status="200"' in ln
        for ln in text.splitlines()
    )
    for name in (
        "toolwire_time_to_first_token_seconds_bucket",
        "toolwire_tokens_generated_total",
        "toolwire_tool_calls_total",
    ):
        assert name in text
    calls = [ln for ln in text.splitlines() if ln.startswith("toolwire_tool_calls_total")]
    assert float(calls[0].split()[-1]) >= 1


def _counter(stack, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.port}/metrics").text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name))


def test_cancelled_stream_frees_its_decode_slot(stack):
    disconnects = _counter(stack, "toolwire_client_disconnects_total")
    body = {
        "model": stack.model,
        "stream": True,
        "max_tokens": 2000,
        "temperature": 1.0,
        "messages": [{"role": "user", "content": "Write a very long story about ships."}],
    }
    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        json=body,
        timeout=120,
        headers={"Authorization": f"Bearer {stack.api_key}"},
    ) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert stack.health()["decode_active_requests"] == 1
    deadline = time.monotonic() + 10
    while stack.health()["decode_active_requests"] != 0:
        assert time.monotonic() < deadline, "the decode slot was not freed"
        time.sleep(0.1)
    assert _counter(stack, "toolwire_client_disconnects_total") == disconnects + 1


# A constraint that pins the text, so stop strings and limits act on known output.
PINNED = {
    "type": "json_schema",
    "json_schema": {
        "name": "pinned",
        "strict": True,
        "schema": {"type": "string", "enum": ["alpha beta gamma delta"]},
    },
}
SAY = [{"role": "user", "content": "Say something."}]


def test_stop_string_cuts_content(client, stack):
    r = client.chat.completions.create(
        model=stack.model, messages=SAY, response_format=PINNED, stop=["gamma"], temperature=0
    )
    assert r.choices[0].message.content == '"alpha beta '
    assert r.choices[0].finish_reason == "stop"


def test_max_tokens_gives_length(client, stack):
    r = client.chat.completions.create(
        model=stack.model,
        messages=SAY,
        response_format=PINNED,
        max_completion_tokens=3,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_seed_makes_sampling_repeatable(client, stack):
    kwargs = dict(model=stack.model, messages=SAY, temperature=1.0, seed=1234, max_tokens=20)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    assert client.chat.completions.create(**kwargs).choices[0].message.content == first


def test_reasoning_effort_none_on_a_model_that_does_not_think(client, stack):
    """The SDK's reasoning_effort reaches the template: `none` is what the embedded model does
    anyway (served, same answer); an effort it cannot honour is refused (test_request_checks)."""
    kwargs = dict(model=stack.model, messages=SAY, temperature=0, max_tokens=8)
    plain = client.chat.completions.create(**kwargs).choices[0].message.content
    r = client.chat.completions.create(reasoning_effort="none", **kwargs)
    assert r.choices[0].message.content == plain


def test_response_format_json_schema_strict(client, stack):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "rain": {"type": "boolean"}},
        "required": ["city", "rain"],
        "additionalProperties": False,
    }
    rf = {"type": "json_schema", "json_schema": {"name": "w", "strict": True, "schema": schema}}
    for stream in (False, True):
        kwargs = dict(
            model=stack.model,
            temperature=0,
            response_format=rf,
            messages=[{"role": "user", "content": "Is it raining in Paris?"}],
        )
        if stream:
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(stream=True, **kwargs)
                if c.choices
            )
        else:
            text = client.chat.completions.create(**kwargs).choices[0].message.content
        jsonschema.validate(json.loads(text), schema)


def test_response_format_json_object(client, stack):
    r = client.chat.completions.create(
        model=stack.model,
        temperature=1.0,
        seed=5,
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        max_tokens=200,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].message.content.lstrip().startswith("{")
