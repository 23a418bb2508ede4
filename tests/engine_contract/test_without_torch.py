"""The decode service on the ggml step runs without torch (issue 34, the stack's memory):
torch's import is 185 MB of resident memory that step never uses. Started as `toolwire up`
starts it, in a process of its own, it serves greedy, seeded and constrained requests, and
no file of torch is mapped into it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.grpc_gen.decode.v1 import decode_pb2_grpc
from toolwire.stack.launcher import free_port

PROMPT = [791, 3363, 315, 9822, 374, 264, 1317, 3446, 922, 18198, 13]


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def decode_process():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TOOLWIRE_INTERNAL_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolwire.stack.cli", "serve", "decode", "--model", "embedded"]
        + ["--port", str(port), "--max-batch", "2", "--kv-tokens", "1024"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _serving(address):
            if proc.poll() is not None:
                pytest.fail(f"the decode service exited ({proc.returncode}): {proc.stdout.read()}")
            assert time.monotonic() < deadline, "the decode service did not serve in 60 s"
            time.sleep(0.2)
        yield proc, address
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "without torch" in out, out  # its startup line says so


def _generate(address: str, **kw) -> list[int]:
    request = pb.GenerateRequest(
        request_id=f"r{time.monotonic_ns()}", prompt_token_ids=PROMPT, **kw
    )
    with grpc.insecure_channel(address) as ch:
        replies = list(decode_pb2_grpc.DecodeServiceStub(ch).Generate(request, timeout=60))
    assert replies[-1].complete.finish_reason in ("stop", "length")
    return [t for r in replies if r.HasField("chunk") for t in r.chunk.token_ids]


def test_the_ggml_decode_service_serves_without_torch(decode_process, tokenizer):
    proc, address = decode_process
    greedy = _generate(address, max_tokens=6, sampling=pb.SamplingParams(temperature=0.0))
    assert len(greedy) == 6
    seeded = pb.SamplingParams(temperature=1.0, top_p=0.9, seed=11)
    first = _generate(address, max_tokens=6, sampling=seeded)
    assert _generate(address, max_tokens=6, sampling=seeded) == first
    digits = _generate(
        address,
        max_tokens=8,
        sampling=pb.SamplingParams(temperature=1.0, seed=3),
        constraint=common.Constraint(regex="[0-9]{3}"),
    )
    text = tokenizer.decode(digits)
    assert len(text) == 3 and text.isdigit(), text

    mapped = {
        line.split(maxsplit=5)[5]
        for line in Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
        if len(line.split(maxsplit=5)) == 6
    }
    torch_files = [p for p in mapped if "libtorch" in p or "/torch/" in p]
    assert not torch_files, torch_files
    assert any("libllama" in p or "xllamacpp" in p for p in mapped)  # the step did load
