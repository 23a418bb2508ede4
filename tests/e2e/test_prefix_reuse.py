"""Prefix reuse as a client sees it, through the OpenAI SDK: a second request with the same
prefix reports usage.prompt_tokens_details.cached_tokens, streamed or not, and the decode
service counts the lookups and hits."""

from __future__ import annotations

import re

import httpx

SYSTEM = "You answer questions about the toolwire shipping service, briefly. " * 6


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def _decode_counter(stack, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.metrics_port('decode')}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}_total{{[^}}]*}} (\S+)$", text, re.M))


def test_second_request_reports_cached_tokens(client, stack):
    hits = _decode_counter(stack, "toolwire_prefix_cache_hits")
    first = client.chat.completions.create(
        model=stack.model, messages=_messages("Do you ship to Oslo?"), max_tokens=4, temperature=0
    )
    second = client.chat.completions.create(
        model=stack.model, messages=_messages("Do you ship to Lima?"), max_tokens=4, temperature=0
    )
    assert second.usage.prompt_tokens_details.cached_tokens > 0
    assert second.usage.prompt_tokens_details.cached_tokens < second.usage.prompt_tokens
    # The first shares only the chat template's opening with what ran before it, if anything.
    assert first.usage.prompt_tokens_details.cached_tokens < (
        second.usage.prompt_tokens_details.cached_tokens
    )
    stream = client.chat.completions.create(
        model=stack.model,
        messages=_messages("Do you ship to Quito?"),
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in stream if c.usage is not None][-1]
    assert usage.prompt_tokens_details.cached_tokens > 0
    assert _decode_counter(stack, "toolwire_prefix_cache_hits") - hits >= (
        second.usage.prompt_tokens_details.cached_tokens + usage.prompt_tokens_details.cached_tokens
    )
    assert _decode_counter(stack, "toolwire_prefix_cache_queries") >= hits
