"""What a response store write costs a turn: `await put` of a realistic tool-calling turn (5
input items, 2 output items, about 3 KB of JSON), from the event loop to the commit, on SQLite
and, given a URL, PostgreSQL. The target is under 2 ms at p50 on SQLite.

    python -m bench.store_write                          # SQLite in a temporary directory
    python -m bench.store_write --postgres postgresql://user:pass@host/db --writes 1000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import orjson

from toolwire.gateway.responses.store import StoredResponse, open_store, owner_of

OWNER = owner_of("sk-bench")
WARM_UP = 30  # the first pages and prepared statements


def realistic(rid: str, previous: str | None = None) -> StoredResponse:
    """A tool-calling turn: 5 input items, 2 output items, about 3 KB of JSON."""
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "Get the current weather in a city, in the unit the user asked for.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city and country"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    }
    items = [
        {
            "id": f"msg_{rid}_0",
            "type": "message",
            "role": "developer",
            "content": [
                {
                    "type": "input_text",
                    "text": "You are a helpful assistant for a travel company. Use the tools "
                    "when they help; answer briefly, in the user's language, and say which "
                    "tool you used. Give temperatures in the unit the user asked for, or in "
                    "celsius when they did not say. When a city is ambiguous (Paris, Texas or "
                    "Paris, France), ask which one they mean before calling a tool. Never "
                    "invent a forecast: when the tool fails, say so and offer to try again. "
                    "Keep answers under three sentences unless the user asks for detail, and "
                    "end with one practical suggestion (an umbrella, a coat, sunscreen).",
                }
            ],
        },
        {
            "id": f"msg_{rid}_1",
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What's the weather in Paris and in Berlin?"}
            ],
        },
        {
            "id": f"fc_{rid}_2",
            "type": "function_call",
            "call_id": f"call_{rid}_a",
            "name": "get_weather",
            "arguments": '{"city": "Paris, France", "unit": "celsius"}',
            "status": "completed",
        },
        {
            "id": f"fco_{rid}_3",
            "type": "function_call_output",
            "call_id": f"call_{rid}_a",
            "output": '{"temperature": 14, "conditions": "light rain", "humidity": 0.81, '
            '"wind_kmh": 17, "observed_at": "2026-12-06T09:00:00Z"}',
        },
        {
            "id": f"msg_{rid}_4",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "And tomorrow, should I take an umbrella?"}],
        },
    ]
    output = [
        {
            "id": f"fc_{rid}_out",
            "type": "function_call",
            "call_id": f"call_{rid}_b",
            "name": "get_weather",
            "arguments": '{"city": "Berlin, Germany", "unit": "celsius"}',
            "status": "completed",
        },
        {
            "id": f"msg_{rid}_out",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {
                    "type": "output_text",
                    "text": "In Paris it is 14 °C with light rain; yes, take an umbrella "
                    "tomorrow. I am checking Berlin now with get_weather.",
                    "annotations": [],
                    "logprobs": [],
                }
            ],
        },
    ]
    response = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "completed_at": int(time.time()),
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4o-mini",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": previous,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [weather],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 312,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 58,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 370,
        },
        "metadata": {},
    }
    return StoredResponse(rid, OWNER, time.time(), previous, items, output, response)


def turn_bytes(r: StoredResponse) -> bytes:
    """What a put writes: the input items and the response, as JSON."""
    return orjson.dumps(r.input_items) + orjson.dumps(r.response)


async def put_times(url: str, writes: int) -> list[float]:
    """Seconds each of `writes` puts took after the warm-up: a chain, each turn's previous the
    one before, as a conversation writes them."""
    store = open_store(url)
    try:
        await store.open()
        times = []
        for i in range(WARM_UP + writes):
            r = realistic(f"resp_{i:05d}", f"resp_{i - 1:05d}" if i else None)
            t = time.perf_counter()
            await store.put(r)
            if i >= WARM_UP:
                times.append(time.perf_counter() - t)
        return times
    finally:
        await store.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writes", type=int, default=300)
    p.add_argument("--postgres", help="also time a PostgreSQL store at this libpq URL")
    args = p.parse_args()
    size = len(turn_bytes(realistic("resp_size")))
    with tempfile.TemporaryDirectory() as tmp:
        urls = [f"sqlite://{tmp}/responses.db", *([args.postgres] if args.postgres else [])]
        print("| store | turn | writes | put p50 | put p90 |\n|---|---|---|---|---|")
        for url in urls:
            times = asyncio.run(put_times(url, args.writes))
            p50 = statistics.median(times) * 1000
            p90 = statistics.quantiles(times, n=10)[-1] * 1000
            name = url.split(":", 1)[0]
            print(f"| {name} | {size} bytes | {len(times)} | {p50:.3f} ms | {p90:.3f} ms |")


if __name__ == "__main__":
    main()
