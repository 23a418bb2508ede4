"""The session stack's decode service on the thread policy, as an operator sees it: the startup
line names the step's thread ceiling and where it comes from, and /metrics reports the count
the last step ran, within that ceiling."""

from __future__ import annotations

import re

import httpx

from toolwire.runtime.cpus import usable_cpus


def test_the_startup_line_and_the_gauge_give_the_step_threads(stack, client):
    client.chat.completions.create(
        model=stack.model, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
    )
    log = stack.log.read_text(errors="replace")
    line = re.search(r"step threads: at most (\d+) \((.+?)\); (adaptive|one CPU)", log)
    assert line, log[-3000:]
    ceiling = int(line.group(1))
    assert ceiling == usable_cpus()  # `toolwire up` gives no --threads here
    assert "CPUs in this process's affinity" in line.group(2)
    metrics = httpx.get(f"http://127.0.0.1:{stack.metrics_port('decode')}/metrics").text
    gauge = re.search(r"^toolwire_decode_step_threads\{[^}]*\} ([0-9.]+)$", metrics, re.M)
    assert gauge, metrics
    assert 1 <= float(gauge.group(1)) <= ceiling
