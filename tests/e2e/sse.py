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
