"""The requests the benchmark sends: the same OpenAI bodies in-process and over the wire."""

from __future__ import annotations

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current temperature for a given location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}

CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Delhi"]


def body(kind: str, i: int, model: str, max_tokens: int) -> dict:
    """kind: `tool` (a constrained streamed tool call) or `text` (unconstrained prose)."""
    city = CITIES[i % len(CITIES)]
    if kind == "tool":
        return {
            "model": model,
            "stream": True,
            "temperature": 0,
            "max_tokens": max_tokens,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"What is the weather in {city}?"}],
            "tools": [WEATHER],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    return {
        "model": model,
        "stream": True,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "user", "content": f"Write a long story about a traveller in {city}."}
        ],
    }
