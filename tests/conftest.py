"""Shared fixtures: the real stack (started once per session) and the embedded tokenizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# Before torch loads (see toolwire/stack/cli.py): the in-process engines' ggml step shares
# torch's OpenMP runtime, whose spinning threads cost it 3x its CPU time on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from toolwire.stack.launcher import child_pids, free_port, wait_for_health

API_KEY = "sk-toolwire-test"
OTHER_KEY = "sk-toolwire-other"  # a second client: stored responses are not shared between keys
INTERNAL_TOKEN = "internal-token-for-tests"
ALIAS = "gpt-4o-mini"  # served as an alias: users keep the model name their code uses

# Small limits, so that the backpressure and limit tests can reach them with a few requests.
# No other test runs requests concurrently, so none of them waits on these.
STACK_LIMITS = {
    "max_batch": 4,
    "max_queue": 4,
    "queue_timeout": 8,
    "grammar_timeout": 3,
    "max_concurrent_requests": 9,
}


class Stack:
    def __init__(self, port: int, grpc_port: int, proc: subprocess.Popen, log: Path):
        self.port = port
        self.grpc_port = grpc_port
        self.proc = proc
        self.log = log  # everything the stack printed
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.api_key = API_KEY
        self.internal_token = INTERNAL_TOKEN
        self.model = ALIAS
        self.limits = STACK_LIMITS

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:  # 503 while a service is down
            return json.load(e)

    def wait_healthy(self, timeout: float = 120) -> None:
        wait_for_health(f"http://127.0.0.1:{self.port}/health", self.proc, timeout)

    def service_addresses(self) -> dict[str, str]:
        """The internal services' addresses, read off the gateway's command line."""
        for pid in child_pids(self.proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[3:5] == [b"serve", b"gateway"]:
                addrs = {}
                for a in argv:
                    if a.startswith(b"--") and b"-addr=" in a:
                        key, value = a[2:].decode().split("=", 1)
                        addrs[key.removesuffix("-addr")] = value
                return addrs
        raise RuntimeError("no gateway process")

    def metrics_port(self, service: str) -> int:
        """The --metrics-port `toolwire up` gave an internal service."""
        argv = Path(f"/proc/{self.service_pid(service)}/cmdline").read_bytes().split(b"\0")
        return int(argv[argv.index(b"--metrics-port") + 1])

    def service_pid(self, service: str) -> int:
        for pid in child_pids(self.proc.pid):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[3:5] == [b"serve", service.encode()]:
                return pid
        raise RuntimeError(f"no {service} process")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    port, grpc_port = free_port(), free_port()
    env = dict(
        os.environ,
        TOOLWIRE_API_KEYS=f"{API_KEY},{OTHER_KEY}",
        PYTHONUNBUFFERED="1",
        TOOLWIRE_INTERNAL_TOKEN=INTERNAL_TOKEN,
    )
    log = tmp_path_factory.mktemp("stack") / "stack.log"
    state = tmp_path_factory.mktemp("state")  # the SQLite response store
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in STACK_LIMITS.items()]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toolwire.stack.cli",
                "up",
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                "--served-model-name",
                ALIAS,
                "--state-dir",
                str(state),
                *flags,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    s = Stack(port, grpc_port, proc, log)
    s.state_dir = state
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", proc)
    except RuntimeError as e:
        proc.kill()
        pytest.fail(f"{e}\n{log.read_text()}")
    yield s
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("toolwire up did not stop on SIGTERM")


@pytest.fixture(scope="session")
def client(stack):
    from openai import OpenAI

    return OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def tokenizer():
    from toolwire.runtime import model_source

    return model_source.load_tokenizer(model_source.resolve("embedded"))


def _engine(**kw):
    import asyncio

    from toolwire.services.decode.batch_engine import BatchEngine

    loop = asyncio.new_event_loop()
    engine = BatchEngine("embedded", max_batch=16, **kw)
    loop.run_until_complete(engine.start())
    engine.loop = loop
    return engine


def _stop(engine):
    engine.loop.run_until_complete(engine.stop())
    engine.loop.close()


@pytest.fixture(scope="session")
def torch_engine():
    """The torch engine on the embedded model as it runs by default (on the CPU: the ggml step
    on the GGUF), in-process, with an event loop of its own."""
    engine = _engine()
    yield engine
    _stop(engine)


@pytest.fixture(scope="session")
def torch_step_engine():
    """The same scheduler on the torch step (`--step torch`: the GGUF decoded by transformers)."""
    engine = _engine(step="torch")
    yield engine
    _stop(engine)
