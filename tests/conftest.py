"""Shared fixtures: the real stack (started once per session) and the embedded tokenizer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from toolwire.launcher import free_port, wait_for_health

API_KEY = "sk-toolwire-test"
ALIAS = "gpt-4o-mini"  # served as an alias: users keep the model name their code uses


class Stack:
    def __init__(self, port: int, grpc_port: int, proc: subprocess.Popen):
        self.port = port
        self.grpc_port = grpc_port
        self.proc = proc
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.api_key = API_KEY
        self.model = ALIAS

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
            return json.load(r)


@pytest.fixture(scope="session")
def stack():
    port, grpc_port = free_port(), free_port()
    env = dict(os.environ, TOOLWIRE_API_KEYS=API_KEY, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolwire.cli", "up", "--port", str(port), "--grpc-port",
         str(grpc_port), "--served-model-name", ALIAS], env=env)
    s = Stack(port, grpc_port, proc)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/health", proc)
    except RuntimeError as e:
        proc.kill()
        pytest.fail(str(e))
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
    from toolwire import model_source

    return model_source.load_tokenizer(model_source.resolve("embedded"))


@pytest.fixture(scope="session")
def torch_engine():
    """The torch engine on the embedded model, in-process, with an event loop of its own."""
    import asyncio

    from toolwire.services.decode.torch_engine import TorchEngine

    loop = asyncio.new_event_loop()
    engine = TorchEngine("embedded", max_batch=16)
    loop.run_until_complete(engine.start())
    engine.loop = loop
    yield engine
    loop.run_until_complete(engine.stop())
    loop.close()
