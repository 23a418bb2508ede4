"""Overload: a bounded queue in front of decode. The stack runs with 4 slots and 4 queue places
(conftest.STACK_LIMITS): the ninth request is refused at once with 429 and Retry-After (gRPC:
RESOURCE_EXHAUSTED), and requests left waiting past the queue timeout end with a 503."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest

from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc
from toolwire.grpc_gen.common.v1 import common_pb2 as common

LONG = [{"role": "user", "content": "Write a very long story about ships."}]
# A constraint that keeps a slot busy: at least 3000 characters before the model may stop.
BUSY = {
    "type": "json_schema",
    "json_schema": {
        "name": "story",
        "strict": True,
        "schema": {"type": "string", "minLength": 3000, "maxLength": 4000},
    },
}


# Sixty properties with bounded-repetition patterns: seconds of compile (past the stack's
# --grammar-timeout). Its own pattern, so that no earlier test left its refusal in the cache.
SLOW_TOOL = {
    "type": "function",
    "function": {
        "name": "slow",
        "parameters": {
            "type": "object",
            "required": [f"p{i}" for i in range(60)],
            "properties": {
                f"p{i}": {"type": "string", "pattern": "[a-z]{1,31}@[a-z]{1,29}"} for i in range(60)
            },
        },
    },
}


def _wait_in_flight(stack, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"http://127.0.0.1:{stack.port}/metrics").text
        now = [
            float(ln.split()[-1])
            for ln in text.splitlines()
            if ln.startswith("toolwire_requests_in_flight{")
        ][0]
        if now == n:
            return
        assert time.monotonic() < deadline, f"never {n} requests in flight ({now})"
        time.sleep(0.05)


def _wait_for(stack, active: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (now := stack.health().get("decode_active_requests")) != active:
        assert time.monotonic() < deadline, f"never reached {active} active requests ({now})"
        time.sleep(0.1)


def test_full_queue_is_429_with_retry_after_and_waiting_too_long_is_503(stack):
    slots, places = stack.limits["max_batch"], stack.limits["max_queue"]
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    url = f"{stack.base_url}/chat/completions"
    long_body = {
        "model": stack.model,
        "messages": LONG,
        "stream": True,
        "max_tokens": 3000,
        "temperature": 1.0,
        "response_format": BUSY,
    }
    with (
        httpx.Client(headers=headers, timeout=120) as http,
        contextlib.ExitStack() as streams,
        ThreadPoolExecutor(places) as pool,
        ThreadPoolExecutor(1) as pool_extra,
    ):
        readers = []  # kept: a dropped line iterator closes its connection (a disconnect)
        for _ in range(slots):  # every slot busy for a long while
            r = streams.enter_context(http.stream("POST", url, json=long_body))
            assert r.status_code == 200
            readers.append(r.iter_lines())
            next(readers[-1])
        waiting = [
            pool.submit(http.post, url, json={**long_body, "stream": False, "max_tokens": 2})
            for _ in range(places)
        ]
        _wait_for(stack, slots + places)
        t0 = time.monotonic()
        refused = http.post(url, json={**long_body, "stream": False, "max_tokens": 2})
        assert time.monotonic() - t0 < 2  # refused at once, not queued
        assert refused.status_code == 429
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"]["code"] == "queue_full"

        with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                chat_pb2_grpc.ChatServiceStub(ch).CreateChatCompletion(
                    chat_pb2.ChatCompletionRequest(
                        model=stack.model, messages=[common.ChatMessage(role="user", content="Hi")]
                    ),
                    metadata=[("authorization", f"Bearer {stack.api_key}")],
                )
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert dict(e.value.trailing_metadata())["retry-after"].isdigit()

        # One more in flight at the gateway (its constraint compiling for seconds in the
        # template service) reaches the gateway's own cap: the next is refused before any call.
        cap = stack.limits["max_concurrent_requests"]
        assert cap == slots + places + 1
        slow = pool_extra.submit(
            http.post,
            url,
            json={
                "model": stack.model,
                "messages": LONG,
                "tools": [SLOW_TOOL],
                "tool_choice": "required",
            },
        )
        _wait_in_flight(stack, cap)
        refused = http.post(url, json={**long_body, "stream": False, "max_tokens": 2})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert refused.headers["Retry-After"].isdigit()
        assert slow.result(timeout=60).json()["error"]["code"] == "schema_too_complex"

        # Nobody frees a slot: the waiting requests give up after the queue timeout.
        for f in waiting:
            r = f.result(timeout=stack.limits["queue_timeout"] + 30)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"].isdigit()
            assert r.json()["error"]["code"] == "queue_timeout"
    _wait_for(stack, 0)  # the streams closed: their slots are free again
