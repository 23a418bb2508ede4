"""Speculation on the session stack, as an operator sees it: the decode startup line says the
drafts are on with this machine's forward costs, and after a request whose answer repeats its
prompt, /metrics counts drafts verified and draft tokens kept (vLLM's spec_decode series)."""

from __future__ import annotations

import re

import httpx


def _counter(metrics: str, name: str) -> float:
    found = re.search(rf"^{name}_total\{{[^}}]*\}} ([0-9.e+]+)$", metrics, re.M)
    assert found, f"{name}_total not in /metrics"
    return float(found.group(1))


def test_drafts_are_on_and_counted(stack, client):
    log = stack.log.read_text(errors="replace")
    assert re.search(r"speculation: prompt-lookup drafts of up to \d+ tokens where they pay", log)
    url = f"http://127.0.0.1:{stack.metrics_port('decode')}/metrics"
    names = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
    before = {n: _counter(httpx.get(url).text, f"toolwire_spec_decode_{n}") for n in names}
    sentence = "the quick brown fox jumps over the lazy dog near the river bank"
    r = client.chat.completions.create(
        model=stack.model,
        messages=[{"role": "user", "content": f"Repeat exactly: {sentence}. {sentence}."}],
        max_tokens=40,
        temperature=0,
    )
    assert r.usage.completion_tokens > 0
    after = {n: _counter(httpx.get(url).text, f"toolwire_spec_decode_{n}") for n in names}
    assert after["num_drafts"] > before["num_drafts"], r.choices[0].message.content
    assert after["num_draft_tokens"] >= after["num_accepted_tokens"]
    assert after["num_accepted_tokens"] > before["num_accepted_tokens"]
