"""Only the gateway gets in: the internal services refuse calls without the shared token (health
excepted, for Kubernetes' probes), serve TLS and mutual TLS when given certificates, and refuse
to start on an open address with neither. Keys and prompts never reach logs, /metrics or
/health."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2, decode_pb2_grpc
from toolwire.grpc_gen.extractor.v1 import extractor_pb2, extractor_pb2_grpc
from toolwire.grpc_gen.template.v1 import template_pb2_grpc
from toolwire.plumbing.internal_security import TOKEN_KEY, ClientSecurity
from toolwire.plumbing.security_flags import TOKEN_ENV
from toolwire.stack.launcher import free_port


def _extract_once(stub, metadata=None) -> str:
    """One Extract call: setup, a token, the end; returns the finish reason."""

    def requests():
        yield extractor_pb2.ExtractRequest(setup=extractor_pb2.ExtractSetup(model="m"))
        yield extractor_pb2.ExtractRequest(tokens=extractor_pb2.TokenChunk(token_ids=[28]))
        yield extractor_pb2.ExtractRequest(end=extractor_pb2.ExtractEnd(finish_reason="stop"))

    return [r.finish_reason for r in stub.Extract(requests(), metadata=metadata, timeout=10)][-1]


def test_internal_services_refuse_calls_without_the_token(stack):
    addrs = stack.service_addresses()
    assert all(a.startswith("127.0.0.1:") for a in addrs.values()), addrs  # `up`: loopback only
    token = [(TOKEN_KEY, stack.internal_token)]
    with grpc.insecure_channel(addrs["template"]) as ch:
        stub = template_pb2_grpc.TemplateServiceStub(ch)
        for metadata in (None, [(TOKEN_KEY, "wrong")]):
            with pytest.raises(grpc.RpcError) as e:
                stub.GetModelInfo(common.GetModelInfoRequest(), metadata=metadata)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.GetModelInfo(common.GetModelInfoRequest(), metadata=token).model_id
        # Kubernetes' gRPC probes carry no metadata: health stays open.
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(addrs["decode"]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            list(
                decode_pb2_grpc.DecodeServiceStub(ch).Generate(
                    decode_pb2.GenerateRequest(
                        request_id="intruder", prompt_token_ids=[1, 2, 3], max_tokens=1
                    )
                )
            )
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(addrs["extractor"]) as ch:
        stub = extractor_pb2_grpc.ExtractorServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            _extract_once(stub)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _extract_once(stub, token) == "stop"


def test_the_container_health_check_needs_no_token(stack):
    """`toolwire health ADDR` (the TensorRT-LLM image's HEALTHCHECK): 0 when serving, else 1."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    for address, expected in (
        (stack.service_addresses()["decode"], 0),
        (f"127.0.0.1:{free_port()}", 1),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "toolwire.stack.cli", "health", address],
            env=env,
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == expected, (address, done.stderr)


def _serve_extractor(*flags: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {k: v for k, v in (env or os.environ).items() if k != TOKEN_ENV}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolwire.stack.cli",
            "serve",
            "extractor",
            "--port",
            str(port),
            *flags,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, port


def test_refuses_an_open_address_without_tls_or_token():
    proc, _ = _serve_extractor("--host", "0.0.0.0")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "refusing to serve on 0.0.0.0" in out and "--insecure" in out


def test_insecure_serves_an_open_address_without_tls_or_token():
    """--insecure: the same address starts without TLS or a token, says so in its log, and
    takes calls with no token."""
    proc, port = _serve_extractor("--host", "0.0.0.0", "--insecure")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            _wait_serving(ch, proc)
            assert _extract_once(extractor_pb2_grpc.ExtractorServiceStub(ch)) == "stop"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "serving on 0.0.0.0 with neither TLS nor a token (--insecure)" in out


def _wait_serving(channel: grpc.Channel, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return
        except grpc.RpcError:
            time.sleep(0.3)
    raise AssertionError("the service did not start")


def test_mutual_tls(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("toolwire-gateway")
    paths = {}
    for name, blob in {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
        "ccert": client.cert_chain_pems[0],
        "ckey": client.private_key_pem,
    }.items():
        paths[name] = tmp_path / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    proc, port = _serve_extractor(
        "--host",
        "0.0.0.0",
        "--tls-cert",
        str(paths["cert"]),
        "--tls-key",
        str(paths["key"]),
        "--tls-client-ca",
        str(paths["ca"]),
    )
    try:
        ca_pem = paths["ca"].read_bytes()
        with_cert = grpc.ssl_channel_credentials(
            ca_pem, paths["ckey"].read_bytes(), paths["ccert"].read_bytes()
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", with_cert) as ch:
            _wait_serving(ch, proc)
            assert _extract_once(extractor_pb2_grpc.ExtractorServiceStub(ch)) == "stop"
        # The gateway's own channel (ClientSecurity), as `--internal-tls-*` configure it.
        security = ClientSecurity(
            ca=ca_pem, cert=paths["ccert"].read_bytes(), key=paths["ckey"].read_bytes()
        )

        async def gateway_health() -> int:
            async with security.channel(f"127.0.0.1:{port}") as ch:
                r = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                return r.status

        assert asyncio.run(gateway_health()) == health_pb2.HealthCheckResponse.SERVING
        # Without a client certificate, or over plain text, nothing gets through.
        for ch in (
            grpc.secure_channel(f"127.0.0.1:{port}", grpc.ssl_channel_credentials(ca_pem)),
            grpc.insecure_channel(f"127.0.0.1:{port}"),
        ):
            with ch, pytest.raises(grpc.RpcError) as e:
                _extract_once(extractor_pb2_grpc.ExtractorServiceStub(ch))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.terminate()
        proc.wait(10)


def test_keys_and_prompts_stay_out_of_logs_metrics_and_health(client, stack):
    secret_prompt = "the launch code is 7f3a9c"
    client.chat.completions.create(
        model=stack.model, max_tokens=2, messages=[{"role": "user", "content": secret_prompt}]
    )
    with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as ch:  # a refused gRPC call
        from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc

        with pytest.raises(grpc.RpcError):
            chat_pb2_grpc.ChatServiceStub(ch).CreateChatCompletion(
                chat_pb2.ChatCompletionRequest(model=stack.model),
                metadata=[("authorization", "Bearer sk-wrong-key-1234")],
            )
    seen = [
        httpx.get(f"http://127.0.0.1:{stack.port}/metrics").text,
        httpx.get(f"http://127.0.0.1:{stack.port}/health").text,
        stack.log.read_text(errors="replace"),
    ]
    for text in seen:
        for secret in (stack.api_key, stack.internal_token, "sk-wrong-key-1234", secret_prompt):
            assert secret not in text
