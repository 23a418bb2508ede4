"""The same load over HTTP against toolwire's gateway or any OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from .measure import Timing, summarize


async def run_load(base_url: str, api_key: str, bodies: list[dict]) -> dict:
    limits = httpx.Limits(max_connections=len(bodies) + 4)
    async with httpx.AsyncClient(
        base_url=base_url,
        timeout=600,
        limits=limits,
        headers={"Authorization": f"Bearer {api_key}"},
    ) as http:

        async def one(body: dict) -> Timing:
            t = Timing(time.perf_counter())
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
                        # TTFT: the first chunk with content or a tool-call delta (a call's
                        # name counts), as a client sees it; not the bare role chunk.
                        if d.get("content") or calls:
                            t.first = t.first or time.perf_counter()
                        if d.get("content") or any(
                            c.get("function", {}).get("arguments") for c in calls
                        ):
                            t.events.append(time.perf_counter())
            # A server that sends no usage chunk streams a token per event.
            t.tokens = t.tokens or len(t.events)
            return t

        start = time.perf_counter()
        timings = await asyncio.gather(*(one(b) for b in bodies))
        return summarize(list(timings), time.perf_counter() - start)
