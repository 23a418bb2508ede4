"""Every extractor pod behind one gateway: a multiplexed stream to each, a request sticky to one.

Why: one channel to a ClusterIP Service with gRPC's default pick_first sends all of
a gateway's requests to one pod, so pods the HPA adds are never used by an existing gateway.
Addresses come from `--extractor-addr` (repeatable, comma-separated); a name that resolves to
several addresses (the headless Service in k8s/) counts as one pod per address and is
resolved again every `REFRESH_S`. A request goes to the pod with the fewest requests of this
gateway on it and stays there (its extraction state lives in that pod); a pod that cannot be
reached when a request starts is skipped for `DOWN_S` and the next one is tried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc

from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2_grpc
from toolwire.plumbing.grpc_server import check_serving
from toolwire.plumbing.internal_security import ClientSecurity

from .extractor_mux import ExtractCall, ExtractStream
from .resolve import resolve, split

log = logging.getLogger("toolwire.gateway")
REFRESH_S = 2.0
DOWN_S = 2.0


@dataclass
class Pod:
    address: str
    channel: grpc.aio.Channel
    stub: extractor_pb2_grpc.ExtractorServiceStub
    stream: ExtractStream
    picks: int = 0  # requests sent to it: the tie-break, and what `--extractor-mux off` spreads
    calls: int = 0  # per-request calls open on it (`--extractor-mux off`)
    down_until: float = 0.0


class ExtractorPool:
    def __init__(self, addresses: list[str] | str, security: ClientSecurity, mux: bool = True):
        self.targets = split(addresses)
        self.security = security
        self.mux = mux
        self.pods: dict[str, Pod] = {}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self._update(await asyncio.to_thread(resolve, self.targets))
        self.task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        for pod in self.pods.values():
            await pod.stream.close()
            await pod.channel.close()

    async def check(self) -> bool:
        """Whether any pod serves."""
        results = await asyncio.gather(*(check_serving(p.channel) for p in self.pods.values()))
        return any(results)

    def _order(self) -> list[Pod]:
        now = time.monotonic()
        up = [p for p in self.pods.values() if p.down_until <= now] or list(self.pods.values())
        load = (lambda p: p.stream.load) if self.mux else (lambda p: p.calls)
        return sorted(up, key=lambda p: (load(p), p.picks))

    async def open(self, setup: pb.ExtractSetup, metadata, request_id: str = ""):
        """The request's extraction on one pod: a handle on its stream (mux), or its own
        Extract call. Raises the last pod's AioRpcError if none could be reached."""
        error: grpc.aio.AioRpcError | None = None
        for pod in self._order():
            pod.picks += 1
            try:
                if self.mux:
                    return await pod.stream.open(setup, request_id)
                call = await ExtractCall.open(pod.stub, setup, metadata, pod)
                pod.calls += 1
                return call
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                error = e
                if len(self.pods) > 1:
                    log.warning("extractor pod %s is not answering; trying another", pod.address)
                pod.down_until = time.monotonic() + DOWN_S
        if error is None:
            error = grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                details="no extractor address",
            )
        raise error

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self._update(await asyncio.to_thread(resolve, self.targets))
            except Exception:  # a failed refresh must not stop the next one
                log.exception("refreshing the extractor pods failed")

    def _update(self, addresses: list[str]) -> None:
        md = self.security.metadata
        for address in addresses:
            if address not in self.pods:
                ch = self.security.channel(address)
                stub = extractor_pb2_grpc.ExtractorServiceStub(ch)
                self.pods[address] = Pod(address, ch, stub, ExtractStream(stub, md))
        for address in set(self.pods) - set(addresses):
            asyncio.get_running_loop().create_task(self._retire(self.pods.pop(address)))

    async def _retire(self, pod: Pod) -> None:
        """A pod no longer named: its requests finish (up to 30 s), then its stream closes."""
        deadline = time.monotonic() + 30
        while (pod.stream.load or pod.calls) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await pod.stream.close()
        await pod.channel.close()
