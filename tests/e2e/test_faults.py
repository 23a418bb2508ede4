"""Faults with the real processes: a service killed mid-stream ends every affected stream with an
error event within a second, /health names it, new requests get 503 with Retry-After, and
`toolwire up` restarts it so the stack serves again with no hand on it."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

LONG = [{"role": "user", "content": "Write a very long story about ships."}]


def _post(stack, **body):
    return httpx.post(
        f"{stack.base_url}/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {stack.api_key}"},
        json={"model": stack.model, "messages": LONG, **body},
    )


def _down_then_back(stack, service: str) -> None:
    health = stack.health()
    assert health["status"] == "unavailable" and health["services"][service] is False, health
    r = _post(stack, max_tokens=2)
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"].isdigit()
    err = r.json()["error"]
    assert err["type"] == "service_unavailable" and service in err["message"]
    assert "127.0.0.1" not in err["message"]  # internal addresses stay internal
    stack.wait_healthy(timeout=180)
    assert _post(stack, max_tokens=2).status_code == 200
    assert stack.proc.poll() is None


@pytest.mark.parametrize("service", ["decode", "extractor"])
def test_killed_mid_stream_the_stream_ends_with_an_error_and_the_stack_recovers(stack, service):
    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {stack.api_key}"},
        json={
            "model": stack.model,
            "messages": LONG,
            "stream": True,
            "max_tokens": 3000,
            "temperature": 1.0,
        },
    ) as r:
        lines = (ln for ln in r.iter_lines() if ln)
        for _ in range(4):
            next(lines)
        os.kill(stack.service_pid(service), signal.SIGKILL)
        killed = time.monotonic()
        rest = list(lines)
        ended = time.monotonic() - killed
    assert ended < 1.0, f"the stream took {ended:.2f} s to end"
    event = json.loads(rest[-1].removeprefix("data: "))
    assert event["error"]["type"] == "service_unavailable", event
    assert "[DONE]" not in rest[-1]
    _down_then_back(stack, service)


def test_template_killed_new_requests_get_503_until_it_is_back(stack):
    os.kill(stack.service_pid("template"), signal.SIGKILL)
    time.sleep(0.3)
    _down_then_back(stack, "template")
