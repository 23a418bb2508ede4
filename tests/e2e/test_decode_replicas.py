"""Three decode replicas behind one gateway (`toolwire up --decode-replicas 3`, a small random
model so that three load in seconds): requests spread by least outstanding, and a replica
killed under load loses only its own in-flight requests, each ending with a clear error, while
new requests go to the others."""

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

KEY = "sk-replicas"
REPLICAS = 3


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("replicas") / "stack.log"
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
                "--decode-replicas",
                str(REPLICAS),
                "--max-batch",
                "4",
            ],
            env=dict(os.environ, TOOLWIRE_API_KEYS=KEY),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{base}/health", proc, timeout=300)
        deadline = time.monotonic() + 120
        while httpx.get(f"{base}/health").json().get("decode_replicas_serving") != REPLICAS:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        decodes = {}
        for pid in child_pids(proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[3:5] == [b"serve", b"decode"]:
                decodes[pid] = int(argv[argv.index(b"--metrics-port") + 1])
        assert len(decodes) == REPLICAS
        yield base, decodes, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def running(metrics_port: int) -> float:
    return metric_total(metrics_port, "toolwire_num_requests_running")


def test_requests_spread_and_a_dead_replica_loses_only_its_own(replicas):
    base, decodes, _ = replicas
    n = 2 * REPLICAS
    results: list = [None] * n

    def one(i: int) -> None:
        results[i] = story_stream(base, KEY, "random-tiny", i, 1500)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while sorted(running(p) for p in decodes.values()) != [2] * REPLICAS:
        assert time.monotonic() < deadline, [running(p) for p in decodes.values()]
        time.sleep(0.05)
    victim = next(iter(decodes))
    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    # A new request right away goes to a live replica (the dead one is skipped or retried).
    r = httpx.post(
        f"{base}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": "random-tiny",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    )
    assert r.status_code == 200, r.text
    for t in threads:
        t.join(120)
    failed = [x for x in results if x != "data: [DONE]"]
    assert len(failed) == 2, results  # the two it held, no more
    for line in failed:
        err = json.loads(line.removeprefix("data: "))["error"]
        assert err["type"] == "service_unavailable" and "decode" in err["message"], line
    assert time.monotonic() - t0 < 120
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "ok" and health["decode_replicas_serving"] >= REPLICAS - 1
