"""Stored responses outlive the gateway process and are shared by every gateway on one database:
a gateway killed with SIGKILL between two turns (`toolwire up` restarts it) continues the
conversation from its store, and two gateway processes on one store (the session stack's SQLite
file; one PostgreSQL database) read, list, continue and delete each other's responses, still
private to the API key that made them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import API_KEY, INTERNAL_TOKEN, OTHER_KEY
from tests.postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from toolwire.stack.launcher import free_ports, wait_for_health

TINY = {"max_output_tokens": 3, "temperature": 0}
FIRST = [
    {"role": "developer", "content": "Answer in one word."},
    {"role": "user", "content": "Name a colour."},
]
AGAIN = "Another one."


def _client(base_url: str, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)


def _fresh_input_tokens(client: openai.OpenAI, model: str) -> int:
    """What AGAIN alone costs: the baseline a continued turn's history adds to."""
    r = client.responses.create(model=model, input=AGAIN, store=False, **TINY)
    return r.usage.input_tokens


def _gateway_pid_after(stack, old: int, timeout: float = 60) -> int:
    """The gateway process `toolwire up` started in place of `old`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = stack.service_pid("gateway")
        except RuntimeError:  # between the death and the restart (1 s back-off)
            pid = old
        if pid != old:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"toolwire up did not restart the gateway in {timeout:.0f} s")


def test_a_conversation_survives_kill_9_of_the_gateway_between_turns(client, stack):
    fresh = _fresh_input_tokens(client, stack.model)
    turn1 = client.responses.create(model=stack.model, input=FIRST, **TINY)
    assert turn1.status in ("completed", "incomplete") and turn1.output_text
    old = stack.service_pid("gateway")
    os.kill(old, signal.SIGKILL)  # right after the client heard turn 1: no clean shutdown
    _gateway_pid_after(stack, old)
    stack.wait_healthy(timeout=120)
    back = client.responses.retrieve(turn1.id)
    assert back.model_dump() == turn1.model_dump()
    turn2 = client.responses.create(
        model=stack.model, input=AGAIN, previous_response_id=turn1.id, **TINY
    )
    assert turn2.status in ("completed", "incomplete")
    assert turn2.previous_response_id == turn1.id
    # The history (turn 1's input and output) went into the prompt, not only AGAIN.
    assert turn2.usage.input_tokens > fresh, (turn2.usage, fresh)
    assert [i.role for i in client.responses.input_items.list(turn2.id)] == ["user"]
    assert stack.proc.poll() is None


# -- gateways sharing one store ------------------------------------------------------------------


def _stack_gateway_argv(stack) -> list[str]:
    """The session stack's gateway command line (its services, limits, model name)."""
    argv = Path(f"/proc/{stack.service_pid('gateway')}/cmdline").read_bytes().split(b"\0")
    return [a.decode() for a in argv if a]


@pytest.fixture(scope="module")
def gateways(stack, tmp_path_factory) -> Iterator[Callable[..., list[str]]]:
    """start(store_url, n): n more gateway processes on the session stack's services and
    `store_url`, healthy; their base URLs. Stopped (SIGTERM) at the end of the module."""
    started: list[tuple[subprocess.Popen, Path]] = []
    logs = tmp_path_factory.mktemp("gateways")
    env = dict(
        os.environ,
        TOOLWIRE_API_KEYS=f"{API_KEY},{OTHER_KEY}",
        TOOLWIRE_INTERNAL_TOKEN=INTERNAL_TOKEN,
        PYTHONUNBUFFERED="1",
    )
    env.pop("TOOLWIRE_RESPONSES_STORE", None)

    def start(store_url: str, n: int) -> list[str]:
        argv = _stack_gateway_argv(stack)
        assert argv[1:5] == ["-m", "toolwire.stack.cli", "serve", "gateway"], argv
        procs = []
        for _ in range(n):  # started together, waited on together: their imports overlap
            port, grpc_port = free_ports(2)
            log = logs / f"gateway-{port}.log"
            # Later flags win (argparse): the stack's own --port and store are overridden.
            cmd = [sys.executable, *argv[1:], "--port", str(port), "--grpc-port", str(grpc_port)]
            cmd += ["--responses-store", store_url]
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
            started.append((proc, log))
            procs.append((proc, log, port))
        urls = []
        for proc, log, port in procs:
            try:
                wait_for_health(f"http://127.0.0.1:{port}/health", proc, timeout=120)
            except RuntimeError as e:
                pytest.fail(f"a second gateway did not start: {e}\n{log.read_text()}")
            urls.append(f"http://127.0.0.1:{port}/v1")
        return urls

    yield start
    for proc, _ in started:
        proc.send_signal(signal.SIGTERM)
    for proc, log in started:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"a second gateway did not stop on SIGTERM\n{log.read_text()}")


def _conversation_crosses_gateways(a_url: str, b_url: str, model: str) -> None:
    a, b, stranger = _client(a_url), _client(b_url), _client(b_url, OTHER_KEY)
    fresh = _fresh_input_tokens(b, model)
    first = a.responses.create(model=model, input=FIRST, **TINY)
    # Read through the other gateway: the response as it was returned, and its input items.
    assert b.responses.retrieve(first.id).model_dump() == first.model_dump()
    items = list(b.responses.input_items.list(first.id, order="asc"))
    assert [(i.role, i.content[0].text) for i in items] == [
        (m["role"], m["content"]) for m in FIRST
    ]
    # Continued through the other gateway, and that continued through the first one again.
    second = b.responses.create(model=model, input=AGAIN, previous_response_id=first.id, **TINY)
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > fresh, (second.usage, fresh)
    third = a.responses.create(model=model, input=AGAIN, previous_response_id=second.id, **TINY)
    assert third.usage.input_tokens > second.usage.input_tokens
    assert a.responses.retrieve(second.id).model_dump() == second.model_dump()
    # Private to its key on every gateway.
    for call in (
        lambda: stranger.responses.retrieve(first.id),
        lambda: stranger.responses.input_items.list(first.id),
        lambda: stranger.responses.create(
            model=model, input=AGAIN, previous_response_id=first.id, **TINY
        ),
        lambda: stranger.responses.delete(first.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    # Deleted through one gateway: gone through the other, and the chain through it broken.
    b.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as e:
        a.responses.create(model=model, input=AGAIN, previous_response_id=third.id, **TINY)
    assert e.value.body["param"] == "previous_response_id"
    for r in (second, third):
        a.responses.delete(r.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(r.id)


def test_two_gateways_on_one_sqlite_file_share_conversations(stack, gateways):
    (other,) = gateways(str(stack.state_dir / "responses.db"), 1)
    _conversation_crosses_gateways(stack.base_url, other, stack.model)
    _conversation_crosses_gateways(other, stack.base_url, stack.model)


def test_two_gateways_on_one_postgresql_database_share_conversations(
    stack,
    gateways,
    postgres_url,  # noqa: F811 (the fixture)
):
    a, b = gateways(postgres_url, 2)
    _conversation_crosses_gateways(a, b, stack.model)
    _conversation_crosses_gateways(b, a, stack.model)
