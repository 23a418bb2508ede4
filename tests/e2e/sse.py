"""Reading a raw server-sent-event stream, as a client without the SDK would."""

from __future__ import annotations

import json

import httpx


def post_stream(stack, body: dict) -> list:
    """All events of a streamed request: parsed JSON objects, then the literal '[DONE]'."""
    events = []
    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        json=body,
        timeout=300,
        headers={"Authorization": f"Bearer {stack.api_key}"},
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def read_recorded(path) -> list:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def story_stream(base: str, key: str, model: str, i: int, max_tokens: int) -> str:
    """A streamed story request read to its end: its last line (the last event, an error event
    when the request failed midway), or the transport error."""
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 1.0,
        "messages": [{"role": "user", "content": f"Story number {i}."}],
    }
    last = None
    try:
        with httpx.stream(
            "POST",
            f"{base}/v1/chat/completions",
            json=body,
            timeout=120,
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            for line in r.iter_lines():
                if line:
                    last = line
    except httpx.HTTPError as e:
        last = f"transport error {e}"
    return last


def metric_total(port: int, name: str) -> float:
    """The sum of a metric's labelled series on a service's /metrics port."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + "{"))
