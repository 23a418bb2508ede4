"""Two template and two extractor processes behind one gateway (`toolwire up
--template-replicas 2 --extractor-replicas 2`, the small random model): template calls go
round robin and each request sticks to one extractor pod, so every process serves some; an
extractor killed under load fails exactly the requests on its stream, each with an error
event, and their decoding is aborted, while the other pod's requests finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.sse import metric_total, story_stream
from toolwire.stack.launcher import child_pids, free_port, wait_for_health

KEY = "sk-service-replicas"
MODEL = "random-tiny"


@pytest.fixture(scope="module")
def stack2(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("service-replicas") / "stack.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toolwire.stack.cli",
                "up",
                "--model",
                "random:tiny",
                "--port",
                str(port),
                "--grpc-port",
                str(free_port()),
                "--template-replicas",
                "2",
                "--extractor-replicas",
                "2",
                "--max-batch",
                "8",
            ],
            env=dict(os.environ, TOOLWIRE_API_KEYS=KEY),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{base}/health", proc, timeout=300)
        procs: dict[str, dict[int, int]] = {"template": {}, "extractor": {}, "decode": {}}
        for pid in child_pids(proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            service = argv[4].decode() if len(argv) > 4 else ""
            if argv[3:4] == [b"serve"] and service in procs:
                procs[service][pid] = int(argv[argv.index(b"--metrics-port") + 1])
        assert len(procs["template"]) == 2 and len(procs["extractor"]) == 2, procs
        # /health says the gateway reaches each tier; wait until every process serves (each
        # serves /metrics once its gRPC server is up), and for the gateway's reconnect back-off.
        deadline = time.monotonic() + 120
        for port in [p for ps in procs.values() for p in ps.values()]:
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.3)
        time.sleep(1.5)
        yield base, procs, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _run(base: str, n: int, max_tokens: int) -> tuple[list, list[threading.Thread]]:
    results: list = [None] * n

    def one(i: int) -> None:
        results[i] = story_stream(base, KEY, MODEL, i, max_tokens)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return results, threads


def test_every_template_and_extractor_process_serves(stack2):
    base, procs, _ = stack2
    results, threads = _run(base, 8, 4)
    for t in threads:
        t.join(60)
    assert results == ["data: [DONE]"] * 8
    renders = [
        metric_total(p, "toolwire_template_renders_total") for p in procs["template"].values()
    ]
    streams = [
        metric_total(p, "toolwire_extractor_streams_total") for p in procs["extractor"].values()
    ]
    assert sum(renders) >= 8 and min(renders) >= 1, renders
    assert sum(streams) >= 8 and min(streams) >= 1, streams


def test_a_dead_extractor_fails_exactly_its_requests(stack2):
    base, procs, _ = stack2
    streams = {
        pid: metric_total(p, "toolwire_extractor_streams_total")
        for pid, p in procs["extractor"].items()
    }
    n = 6
    results, threads = _run(base, n, 1500)
    deadline = time.monotonic() + 30
    decode_port = next(iter(procs["decode"].values()))
    while metric_total(decode_port, "toolwire_num_requests_running") < n:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim = next(iter(procs["extractor"]))
    held = (
        metric_total(procs["extractor"][victim], "toolwire_extractor_streams_total")
        - streams[victim]
    )
    assert 0 < held < n  # both pods hold some of the requests
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while sum(x is not None for x in results) < held:
        assert time.monotonic() < deadline, results
        time.sleep(0.05)
    # Their decoding is aborted at once, while the other pod's requests still run.
    deadline = time.monotonic() + 5
    while metric_total(decode_port, "toolwire_num_requests_running") > n - held:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for t in threads:
        t.join(120)
    failed = [x for x in results if x != "data: [DONE]"]
    assert len(failed) == held, results  # the requests on its stream, no more
    for line in failed:
        err = json.loads(line.removeprefix("data: "))["error"]
        assert err["type"] == "service_unavailable" and "extractor" in err["message"], line
