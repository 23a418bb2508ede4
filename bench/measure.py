"""Per-request timings and their summary: tokens/s, time to first token, inter-token latency."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Timing:
    start: float
    first: float | None = None
    events: list[float] = field(default_factory=list)  # arrival time of each token-bearing event
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # usage.prompt_tokens_details.cached_tokens, where reported
    # Streamed a tool call (a server that ignores `tools` writes prose); None: not observed.
    called: bool | None = None
    end: float | None = None  # the stream's end, where the load read it


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summarize(timings: list[Timing], wall: float) -> dict:
    ttft = [t.first - t.start for t in timings if t.first is not None]
    # The first content or arguments (a streamed call's name alone is TTFT, not this).
    first_event = [t.events[0] - t.start for t in timings if t.events]
    itl = [b - a for t in timings for a, b in zip(t.events, t.events[1:])]
    tokens = sum(t.tokens for t in timings)
    summary = {
        "requests": len(timings),
        "tokens": tokens,
        "events": sum(len(t.events) for t in timings),
        "wall_s": wall,
        "tok_s": tokens / wall if wall else 0.0,
        # Requests a second: a tool call's work is the call, whatever its token count.
        "req_s": len(timings) / wall if wall else 0.0,
        "ttft_p50_ms": 1000 * pct(ttft, 0.5),
        "ttft_p95_ms": 1000 * pct(ttft, 0.95),
        "first_event_p50_ms": 1000 * pct(first_event, 0.5),
        "itl_p50_ms": 1000 * pct(itl, 0.5),
        "itl_p95_ms": 1000 * pct(itl, 0.95),
        "tokens_per_request": statistics.mean(t.tokens for t in timings) if timings else 0,
        "prompt_tokens": statistics.mean(t.prompt_tokens for t in timings) if timings else 0,
        "cached_tokens": statistics.mean(t.cached_tokens for t in timings) if timings else 0,
    }
    if timings and all(t.end is not None for t in timings):
        summary["latency_p50_ms"] = 1000 * pct([t.end - t.start for t in timings], 0.5)
    if all(t.called is not None for t in timings):  # where the load read the deltas
        summary["called"] = sum(t.called for t in timings)
    return summary
