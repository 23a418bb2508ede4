"""One JSON log line per request at the gateway (ids, sizes, timings; never content or keys),
and the request id carried to the services in gRPC metadata and into their log lines."""

from __future__ import annotations

import json
import time

import grpc
import httpx
import pytest

from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc
from toolwire.grpc_gen.common.v1 import common_pb2 as common

SLOW_TOOL = {
    "type": "function",
    "function": {
        "name": "slow",
        "parameters": {
            "type": "object",
            "required": [f"p{i}" for i in range(60)],
            "properties": {
                f"p{i}": {"type": "string", "pattern": "[a-z]{1,29}@[a-z]{1,31}"} for i in range(60)
            },
        },
    },
}


def _log_lines(stack, request_id: str, timeout: float = 5) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            ln for ln in stack.log.read_text(errors="replace").splitlines() if request_id in ln
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def _json_line(lines: list[str]) -> dict:
    records = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert len(records) == 1, lines
    return records[0]


def test_each_request_is_one_json_line_named_by_its_id(client, stack):
    secret = "my neighbour's name is Alberta"
    raw = client.chat.completions.with_raw_response.create(
        model=stack.model, max_tokens=8, messages=[{"role": "user", "content": secret}]
    )
    completion = raw.parse()
    rid = raw.headers["x-request-id"]
    assert rid == completion.id
    lines = _log_lines(stack, rid)
    record = _json_line(lines)
    assert record["event"] == "chat_completion" and record["status"] == 200
    assert record["api"] == "rest" and record["model"] == stack.model
    assert record["prompt_tokens"] == completion.usage.prompt_tokens
    assert record["completion_tokens"] == completion.usage.completion_tokens
    assert record["finish_reason"] == completion.choices[0].finish_reason
    assert record["ttft_ms"] > 0 and record["duration_ms"] >= record["ttft_ms"]
    text = "\n".join(lines)
    assert secret not in text and stack.api_key not in text


def test_a_refused_request_is_logged_with_its_code(stack):
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {stack.api_key}"},
        json={
            "model": stack.model,
            "messages": [{"role": "user", "content": "x"}],
            "stop": ["a"] * 9,
        },
    )
    record = _json_line(_log_lines(stack, r.headers["x-request-id"]))
    assert (record["status"], record["error_code"]) == (400, "too_many_stop_sequences")


def test_the_request_id_reaches_the_services_log_lines(stack):
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {stack.api_key}"},
        json={
            "model": stack.model,
            "tools": [SLOW_TOOL],
            "tool_choice": "required",
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert r.status_code == 400
    lines = _log_lines(stack, r.headers["x-request-id"])
    # The template service's warning about the stuck compile names the request.
    assert any(f"toolwire.template [{r.headers['x-request-id']}]" in ln for ln in lines), lines


def test_a_grpc_refusal_for_the_key_is_logged_like_rest(stack):
    """A ChatService call without a key, or with a wrong one: one JSON line, as REST writes."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        stub = chat_pb2_grpc.ChatServiceStub(ch)
        for label, metadata in (("none", None), ("wrong", (("authorization", "Bearer sk-no"),))):
            model = f"log-me-{label}-{time.monotonic_ns()}"  # the line is found by its model
            request = chat_pb2.ChatCompletionRequest(
                model=model, messages=[common.ChatMessage(role="user", content="x")]
            )
            with pytest.raises(grpc.RpcError) as e:
                stub.CreateChatCompletion(request, metadata=metadata, timeout=30)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            record = _json_line(_log_lines(stack, model))
            assert (record["api"], record["status"], record["error_code"]) == (
                "grpc",
                401,
                "invalid_api_key",
            )
            assert record["request_id"].startswith("chatcmpl-") and not record["stream"]
