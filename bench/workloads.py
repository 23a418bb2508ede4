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


AGENT_SYSTEM = (
    "You are a travel assistant. Answer each question about the weather by calling "
    "get_weather with the city the user names and the unit they prefer (c unless they say f)."
)


def agent_messages(conversation: int, turn: int) -> list[dict]:
    """An agent's conversation at `turn` (0 = the first request): the same system prompt and
    tools every turn; each turn is the previous request plus the assistant's call, the tool's
    result and a new user line, so the prompt only grows."""
    messages = [{"role": "system", "content": AGENT_SYSTEM}]
    for k in range(turn + 1):
        city = CITIES[(conversation + k) % len(CITIES)]
        ask = "What is the weather in" if k == 0 else "And in"
        messages.append({"role": "user", "content": f"{ask} {city}?"})
        if k == turn:
            break
        call_id = f"call_{conversation}_{k}"
        arguments = f'{{"location": "{city}", "unit": "c"}}'
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            }
        )
        messages.append(
            {"role": "tool", "tool_call_id": call_id, "content": f"{12 + k} degrees, clear"}
        )
    return messages


def body(
    kind: str, i: int, model: str, max_tokens: int, turn: int = 0, stream: int | None = None
) -> dict:
    """kind: `tool` (a constrained streamed tool call), `text` (unconstrained prose) or `agent`
    (the tool call at `turn` of conversation `stream`, default i)."""
    city = CITIES[i % len(CITIES)]
    if kind in ("agent", "tool"):
        if kind == "agent":
            messages = agent_messages(i if stream is None else stream, turn)
        else:
            messages = [{"role": "user", "content": f"What is the weather in {city}?"}]
        return {
            "model": model,
            "stream": True,
            "temperature": 0,
            "max_tokens": max_tokens,
            "stream_options": {"include_usage": True},
            "messages": messages,
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
