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
    """kind: `tool` (a constrained streamed tool call), `text` (unconstrained prose), `agent`
    (the tool call at `turn` of conversation `stream`, default i) or `after` (the answer after
    a tool result: bench.tool_rounds' rounds, tool_choice none)."""
    city = CITIES[i % len(CITIES)]
    streamed = {
        "model": model,
        "stream": True,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }
    if kind == "after":
        from .tool_rounds import ROUNDS

        rnd = ROUNDS[i % len(ROUNDS)]
        return streamed | {
            "messages": rnd.messages(),
            "tools": [rnd.tool()],
            "tool_choice": "none",
        }
    if kind in ("agent", "tool"):
        if kind == "agent":
            messages = agent_messages(i if stream is None else stream, turn)
        else:
            messages = [{"role": "user", "content": f"What is the weather in {city}?"}]
        return streamed | {
            "messages": messages,
            "tools": [WEATHER],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    story = f"Write a long story about a traveller in {city}."
    return streamed | {"messages": [{"role": "user", "content": story}]}


def responses_body(chat: dict, store: bool | None = None) -> dict:
    """The Responses API body (`POST /v1/responses`) that asks what the chat body `chat`
    asks: its messages as input items (a call as a `function_call`, a tool result as a
    `function_call_output`), flat function tools, `max_output_tokens`, and `store` where
    given. Usage is always in a Responses stream, so `stream_options` has no counterpart; a
    chat key with no Responses equivalent raises ValueError rather than being dropped."""
    out: dict = {"model": chat["model"]}
    for key, value in chat.items():
        if key in ("model", "stream", "temperature", "top_p", "parallel_tool_calls"):
            out[key] = value
        elif key in ("max_tokens", "max_completion_tokens"):
            out["max_output_tokens"] = value
        elif key == "stream_options":
            if set(value) - {"include_usage"}:
                raise ValueError(f"stream_options {sorted(value)} has no Responses equivalent")
        elif key == "messages":
            out["input"] = [item for m in value for item in _input_items(m)]
        elif key == "tools":
            out["tools"] = [_flat_tool(t) for t in value]
        elif key == "tool_choice":
            out["tool_choice"] = (
                {"type": "function", "name": value["function"]["name"]}
                if isinstance(value, dict) and value.get("type") == "function"
                else value
            )
        elif key == "response_format":
            out["text"] = {"format": _text_format(value)}
        else:
            raise ValueError(f"chat key {key!r} has no Responses equivalent here")
    if store is not None:
        out["store"] = store
    return out


def _input_items(message: dict) -> list[dict]:
    role, content = message["role"], message.get("content")
    if role == "tool":
        return [
            {
                "type": "function_call_output",
                "call_id": message["tool_call_id"],
                "output": content,
            }
        ]
    items = [{"role": role, "content": content}] if content else []
    for call in message.get("tool_calls") or []:
        items.append(
            {
                "type": "function_call",
                "call_id": call["id"],
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
            }
        )
    return items


def _flat_tool(tool: dict) -> dict:
    if tool.get("type") != "function":
        raise ValueError(f"tool type {tool.get('type')!r}: only function tools are converted")
    return {"type": "function", **tool["function"]}


def _text_format(fmt: dict) -> dict:
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", **fmt["json_schema"]}
    return dict(fmt)
