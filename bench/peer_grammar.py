"""The peer's tool requests as grammar-constrained completions, so that both servers do the same
work: a schema-exact call from the same prompt.

llama-server's chat route does not force a call under `tool_choice: "required"` for a
Hermes-style template: its parser lets free content come first (`optional(content(until(
"<tool_call>")))` in common/chat-auto-parser-generator.cpp, b11549), and SmolLM2 never writes the
marker, so it answers in 64 tokens of prose (0 calls in 16 requests). Here llama-server renders
the request's prompt itself (`/apply-template`, with bench/peer_hermes.jinja: toolwire's 212
tokens), the prompt gets the `<tool_call>\\n` toolwire forces first, and `/completion` samples the
call's JSON under `json_schema` (`{"name": <const>, "arguments": <the tool's parameters>}`,
llama.cpp's own schema-to-grammar). Toolwire forces the same envelope and the name by
jump-forward and samples the arguments; llama.cpp samples every token of the JSON (32 tokens for
`get_weather({"location": "Paris", "unit": "c"})`), which is its way of serving this request.
"""

from __future__ import annotations

import json
import time

import httpx

from .measure import Timing
from .remote import load_client, timed

MARKER = "<tool_call>\n"


def call_schema(tools: list[dict]) -> dict:
    """The JSON of one call of any of the tools: the object inside `<tool_call>` tags."""
    one = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"]["parameters"],
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return one[0] if len(one) == 1 else {"anyOf": one}


def is_call(text: str, tools: list[dict]) -> bool:
    """The completion is a call of one of the tools, with an arguments object."""
    try:
        call = json.loads(text)
    except json.JSONDecodeError:
        return False
    names = {t["function"]["name"] for t in tools}
    return (
        isinstance(call, dict)
        and call.get("name") in names
        and isinstance(call.get("arguments"), dict)
    )


async def completion_bodies(root: str, bodies: list[dict]) -> list[dict]:
    """Each chat body as the /completion body llama-server serves it by: its own rendering of
    the messages and tools, then the call marker, then the call's schema. Rendered before the
    load's clock starts (toolwire's rendering is inside it: a bias of a few ms for the peer)."""
    async with httpx.AsyncClient(base_url=root, timeout=60) as http:
        out = []
        for b in bodies:
            r = await http.post(
                "/apply-template",
                json={k: b[k] for k in ("messages", "tools", "tool_choice")},
            )
            r.raise_for_status()
            out.append(
                {
                    "prompt": r.json()["prompt"] + MARKER,
                    "json_schema": call_schema(b["tools"]),
                    "n_predict": b["max_tokens"],
                    "temperature": b["temperature"],
                    "stream": True,
                    "cache_prompt": True,
                    "tools": b["tools"],  # kept for the check; not sent
                }
            )
        return out


async def run_load(root: str, bodies: list[dict]) -> dict:
    """The completion bodies streamed at once; the same summary as bench/remote.py's."""
    async with load_client(root, len(bodies)) as http:

        async def one(body: dict) -> Timing:
            tools = body["tools"]
            sent = {k: v for k, v in body.items() if k != "tools"}
            t = Timing(time.perf_counter())
            text = []
            async with http.stream("POST", "/completion", json=sent) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:  # a failed request must not count as a fast one
                        raise RuntimeError(f"llama-server: {chunk['error']}")
                    if chunk.get("content"):
                        now = time.perf_counter()
                        t.first = t.first or now
                        t.events.append(now)
                        text.append(chunk["content"])
                    if chunk.get("stop"):
                        t.tokens = chunk.get("tokens_predicted", len(t.events))
                        t.prompt_tokens = chunk.get("tokens_evaluated", 0)
                        t.cached_tokens = chunk.get("timings", {}).get("cache_n", 0)
            t.end = time.perf_counter()
            t.called = is_call("".join(text), tools)
            return t

        return await timed(one, bodies)
