"""One JSON line per request at the gateway: who asked for what and how it went. Never a key,
a message or any generated text: ids, sizes, timings and outcomes only."""

from __future__ import annotations

import logging
import sys
import time

import orjson

log = logging.getLogger("toolwire.requests")


def setup() -> None:
    """Bare JSON lines on stderr, apart from the services' human-readable log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def write(
    *,
    request_id: str,
    api: str,
    model: str,
    status: int,
    started: float,
    code: str | None = None,
    stream: bool = False,
    run=None,
) -> None:
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
        "event": "response" if api == "responses" else "chat_completion",
        "request_id": request_id,
        "api": api,
        "model": model[:128],
        "status": status,
        "stream": stream,
        "duration_ms": round(1000 * (time.perf_counter() - started), 1),
    }
    if code:
        record["error_code"] = code
    if run is not None:
        record.update(
            prompt_tokens=run.prompt_tokens,
            completion_tokens=run.completion_tokens,
            tool_calls=run.tool_calls,
            finish_reason=run.finish,
        )
        if run.ttft is not None:
            record["ttft_ms"] = round(1000 * run.ttft, 1)
    log.info(orjson.dumps(record).decode())
