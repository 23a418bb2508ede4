"""The same load over HTTP against toolwire's gateway or any OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse

import httpx

from . import sse_counter
from .measure import Timing, summarize


def load_client(base_url: str, streams: int, headers: dict | None = None) -> httpx.AsyncClient:
    """A client with a connection for every stream of the load, and time for the slowest."""
    limits = httpx.Limits(max_connections=streams + 4)
    return httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits, headers=headers)


async def timed(one, bodies: list[dict]) -> dict:
    """Every body's stream at once through `one` (body -> Timing), summarized over the wall."""
    start = time.perf_counter()
    timings = await asyncio.gather(*(one(b) for b in bodies))
    return summarize(list(timings), time.perf_counter() - start)


async def run_load(base_url: str, api_key: str, bodies: list[dict]) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with load_client(base_url, len(bodies), headers) as http:

        async def one(body: dict) -> Timing:
            t = Timing(time.perf_counter(), called=False)
            async with http.stream("POST", "/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if usage := chunk.get("usage"):
                        t.tokens = usage["completion_tokens"]
                        t.prompt_tokens = usage.get("prompt_tokens", 0)
                        details = usage.get("prompt_tokens_details") or {}
                        t.cached_tokens = details.get("cached_tokens") or 0
                    for ch in chunk.get("choices", []):
                        d = ch.get("delta", {})
                        calls = d.get("tool_calls") or []
                        t.called = t.called or bool(calls)
                        # TTFT: the first chunk with content or a tool-call delta (a call's
                        # name counts), as a client sees it; not the bare role chunk.
                        if d.get("content") or calls:
                            t.first = t.first or time.perf_counter()
                        if d.get("content") or any(
                            c.get("function", {}).get("arguments") for c in calls
                        ):
                            t.events.append(time.perf_counter())
            t.end = time.perf_counter()
            # A server that sends no usage chunk streams a token per event.
            t.tokens = t.tokens or len(t.events)
            return t

        return await timed(one, bodies)


async def run_load_lean(base_url: str, api_key: str, bodies: list[dict]) -> dict:
    """The same load and summary, read by bench/sse_counter.py's epoll client: content events
    counted in the bytes, no JSON parsed but the usage chunk. On 2 cores the load's client
    takes its CPU from the services it measures (httpx and a JSON parse per event: about 55 µs
    a token); the engine in-process has no such client. Text deltas only: a tool-call delta
    is not counted."""
    u = urllib.parse.urlsplit(base_url)
    path = u.path.rstrip("/") + "/chat/completions"
    requests = [
        sse_counter.http_request(u.hostname, path, api_key, json.dumps(b).encode()) for b in bodies
    ]
    start = time.perf_counter()
    counts = await asyncio.to_thread(sse_counter.run_epoll_counts, u.hostname, u.port, requests)
    wall = time.perf_counter() - start
    timings = []
    for c in counts:
        tokens = c.result()[0]  # raises on a bad response
        usage = c.usage()
        details = usage.get("prompt_tokens_details") or {}
        timings.append(
            Timing(
                c.start,
                None if c.first is None else c.start + c.first,
                c.times,
                tokens,
                usage.get("prompt_tokens", 0),
                details.get("cached_tokens") or 0,
            )
        )
    return summarize(timings, wall)
