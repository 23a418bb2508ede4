"""Every toolwire gRPC server: the service itself, grpc.health.v1 and server reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from toolwire.plumbing.internal_security import CHANNEL_OPTIONS, ServerSecurity

log = logging.getLogger("toolwire")


class GrpcServer:
    """A started grpc.aio server whose health service reports SERVING once `start` returns.
    `security` (internal services) adds TLS and the token check; the gateway passes none."""

    def __init__(self, address: str, security: ServerSecurity | None = None, options=()):
        self.address = address
        self.security = security or ServerSecurity()
        self.server = grpc.aio.server(
            options=CHANNEL_OPTIONS + list(options), interceptors=self.security.interceptors()
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.names = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]

    def add(self, add_fn: Callable, servicer, descriptor) -> None:
        """Register a servicer: add_fn is the generated add_XServicer_to_server."""
        add_fn(servicer, self.server)
        for svc in descriptor.services_by_name.values():
            self.names.append(svc.full_name)

    async def start(self) -> None:
        reflection.enable_server_reflection(self.names, self.server)
        creds = self.security.credentials()
        port = (
            self.server.add_secure_port(self.address, creds)
            if creds
            else self.server.add_insecure_port(self.address)
        )
        if port == 0:
            raise SystemExit(f"cannot listen on {self.address}")
        await self.server.start()
        for name in self.names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def check_serving(ch: grpc.aio.Channel, timeout: float = 2.0) -> bool:
    """Whether the gRPC server behind the channel reports SERVING."""
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        resp = await stub.Check(  # type: ignore[attr-defined]  # the stubs' HealthStub has no methods
            health_pb2.HealthCheckRequest(service=""), timeout=timeout
        )
        return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.aio.AioRpcError:
        return False
