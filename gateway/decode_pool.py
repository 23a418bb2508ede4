"""Many decode replicas behind one gateway: least outstanding requests, unhealthy ones skipped.

Addresses come from `--decode-addr` (repeatable, or comma-separated); a name that resolves to
several addresses (a Kubernetes headless Service) counts as one replica per address, and is
resolved again every `REFRESH_S`, so replicas that come and go are followed.

Each replica's constraint dialect is read from its GetModelInfo when it starts serving; a
request's constraint is built in the dialect every serving replica takes (`dialect`) and goes
only to replicas that take it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set
from dataclasses import dataclass, field

import grpc

from toolwire.constraints.dialects import STRUCTURAL_TAG, accepts, common_dialect
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2_grpc
from toolwire.plumbing.grpc_server import check_serving
from toolwire.plumbing.internal_security import ClientSecurity

from .decode_mux import DecodeStream
from .resolve import resolve

log = logging.getLogger("toolwire.gateway")
REFRESH_S = 2.0  # health checks and DNS


@dataclass
class Replica:
    address: str
    channel: grpc.aio.Channel
    stub: decode_pb2_grpc.DecodeServiceStub
    outstanding: int = 0  # requests this gateway has running on it
    healthy: bool = True
    served: bool = False  # has answered a health check: a later loss is worth a log line
    picks: int = field(default=0)  # requests sent to it, for the tie-break
    dialect: str | None = None  # its engine's constraint dialect, once read
    stream: DecodeStream | None = None  # the multiplexed stream to it (decode_mux.py)

    def open(self, request, metadata, mux: bool, interval: tuple[int, int] = (0, 0)):
        """Start `request` here: on this replica's multiplexed stream (its tokens held there
        by `interval`, (tokens, ms)), or (mux off) as its own Generate call. Either is read
        with read() and stopped with cancel()."""
        if not mux:
            return self.stub.Generate(request, metadata=metadata)
        if self.stream is None:
            self.stream = DecodeStream(self.stub, metadata)
        return self.stream.open(request, interval)


class DecodePool:
    def __init__(self, addresses: list[str], security: ClientSecurity):
        self.targets = [a for spec in addresses for a in spec.split(",") if a]
        self.security = security
        self.replicas: dict[str, Replica] = {}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self._update(await asyncio.to_thread(self._resolve))
        await self.check()
        self.task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        for r in self.replicas.values():
            if r.stream is not None:
                await r.stream.close()
            await r.channel.close()

    def dialect(self) -> str:
        """The constraint dialect every serving replica takes."""
        return common_dialect(
            [r.dialect for r in self.replicas.values() if r.healthy and r.dialect]
        )

    def pick(self, dialect: str, exclude: Set[str] = frozenset()) -> Replica | None:
        """The healthy replica taking `dialect` with the fewest outstanding requests (then the
        least used)."""
        ready = [
            r
            for r in self.replicas.values()
            if r.healthy and r.address not in exclude and r.dialect and accepts(r.dialect, dialect)
        ]
        if not ready:
            return None
        best = min(ready, key=lambda r: (r.outstanding, r.picks))
        best.picks += 1
        return best

    def mark_down(self, replica: Replica) -> None:
        if replica.healthy and replica.served:
            log.warning(
                "decode replica %s is not answering; sending requests elsewhere", replica.address
            )
        replica.healthy = False
        replica.dialect = None  # it may come back with another engine

    async def check(self) -> dict[str, bool]:
        results = await asyncio.gather(*(check_serving(r.channel) for r in self.replicas.values()))
        for r, ok in zip(list(self.replicas.values()), results):
            if ok and not r.healthy and r.served:
                log.info("decode replica %s is serving again", r.address)
            r.healthy = ok
            r.served = r.served or ok
            if not ok:
                r.dialect = None
        await asyncio.gather(
            *(
                self._read_dialect(r)
                for r in self.replicas.values()
                if r.healthy and r.dialect is None
            )
        )
        return {r.address: r.healthy for r in self.replicas.values()}

    async def _read_dialect(self, replica: Replica) -> None:
        try:
            info = await replica.stub.GetModelInfo(
                common.GetModelInfoRequest(), timeout=5, metadata=self.security.metadata
            )
        except grpc.aio.AioRpcError as e:
            log.warning(
                "decode replica %s did not say its constraint dialect (%s); not "
                "sending it requests yet",
                replica.address,
                e.code().name,
            )
            return
        # A decode service from before dialects takes xgrammar 0.2 structural tags.
        replica.dialect = info.constraint_dialect or STRUCTURAL_TAG

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self._update(await asyncio.to_thread(self._resolve))
                await self.check()
            except Exception:  # a failed refresh must not stop the next one
                log.exception("refreshing the decode replicas failed")

    def _resolve(self) -> list[str]:
        return resolve(self.targets)

    def _update(self, addresses: list[str]) -> None:
        for address in addresses:
            if address not in self.replicas:
                ch = self.security.channel(address)
                self.replicas[address] = Replica(address, ch, decode_pb2_grpc.DecodeServiceStub(ch))
        for address in set(self.replicas) - set(addresses):
            replica = self.replicas.pop(address)
            asyncio.get_running_loop().create_task(replica.channel.close(grace=30))
