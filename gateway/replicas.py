"""The replicas of one internal service behind this gateway: decode replicas, extractor pods.

Why one set for both: each is a list of addresses from repeatable, comma-separated flags, where
a name that resolves to several addresses (a Kubernetes headless Service) counts one replica per
address and is resolved again every `REFRESH_S`; each replica has one long-lived stream from
this gateway (generate_stream.py, extract_stream.py); a request goes to the serving replica
with the fewest of this gateway's requests on it (then the least picked), and stays there. A
replica that cannot be reached is marked down until a health check says it serves again; one no
longer named finishes its requests (up to `RETIRE_S`) before its stream closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Set
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import grpc

from toolwire.plumbing.grpc_server import check_serving
from toolwire.plumbing.internal_security import ClientSecurity

from .resolve import resolve, split

log = logging.getLogger("toolwire.gateway")
REFRESH_S = 2.0  # health checks and DNS
RETIRE_S = 30.0


class ReplicaStream(Protocol):
    """The gateway's one stream to a replica, as the set needs it."""

    @property
    def load(self) -> int: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=ReplicaStream)


@dataclass(eq=False)
class Replica(Generic[S]):
    address: str
    channel: grpc.aio.Channel
    stream: S
    healthy: bool = True
    served: bool = False  # has answered a health check: a later loss is worth a log line
    picks: int = field(default=0)  # requests sent to it, for the tie-break
    dialect: str | None = None  # a decode replica's constraint dialect, once read


class ReplicaSet(Generic[S]):
    """`kind` names the service in log lines; `make_stream(address, channel)` builds a replica's
    stream; `on_serving(replica)`, if given, runs for a serving replica that has no dialect yet
    (decode reads its constraint dialect there)."""

    def __init__(
        self,
        kind: str,
        addresses: list[str] | str,
        security: ClientSecurity,
        make_stream: Callable[[str, grpc.aio.Channel], S],
        on_serving: Callable[[Replica[S]], Awaitable[None]] | None = None,
    ):
        self.kind = kind
        self.targets = split(addresses)
        self.security = security
        self.make_stream = make_stream
        self.on_serving = on_serving
        self.replicas: dict[str, Replica[S]] = {}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self._update(await asyncio.to_thread(resolve, self.targets))
        await self.check()
        self.task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        for r in self.replicas.values():
            await r.stream.close()
            await r.channel.close()

    def serving(self) -> list[Replica[S]]:
        return [r for r in self.replicas.values() if r.healthy]

    def order(
        self, accept: Callable[[Replica[S]], bool] = lambda r: True, exclude: Set[str] = frozenset()
    ) -> list[Replica[S]]:
        """The serving replicas `accept` takes, fewest of this gateway's requests first (then
        the least picked)."""
        ready = [
            r
            for r in self.replicas.values()
            if r.healthy and r.address not in exclude and accept(r)
        ]
        return sorted(ready, key=lambda r: (r.stream.load, r.picks))

    def mark_down(self, replica: Replica[S]) -> None:
        if replica.healthy and replica.served:
            log.warning(
                "%s %s is not answering; sending requests elsewhere", self.kind, replica.address
            )
        replica.healthy = False
        replica.dialect = None  # it may come back with another engine

    async def check(self) -> dict[str, bool]:
        """Each replica serving? (grpc.health.v1, every REFRESH_S and for /health)."""
        replicas = list(self.replicas.values())
        results = await asyncio.gather(*(check_serving(r.channel) for r in replicas))
        for r, ok in zip(replicas, results):
            if ok and not r.healthy and r.served:
                log.info("%s %s is serving again", self.kind, r.address)
            r.healthy = ok
            r.served = r.served or ok
            if not ok:
                r.dialect = None
        if self.on_serving is not None:
            await asyncio.gather(
                *(self.on_serving(r) for r in replicas if r.healthy and r.dialect is None)
            )
        return {r.address: r.healthy for r in replicas}

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self._update(await asyncio.to_thread(resolve, self.targets))
                await self.check()
            except Exception:  # a failed refresh must not stop the next one
                log.exception("refreshing the %s replicas failed", self.kind)

    def _update(self, addresses: Iterable[str]) -> None:
        addresses = list(addresses)
        for address in addresses:
            if address not in self.replicas:
                ch = self.security.channel(address)
                self.replicas[address] = Replica(address, ch, self.make_stream(address, ch))
        for address in set(self.replicas) - set(addresses):
            asyncio.get_running_loop().create_task(self._retire(self.replicas.pop(address)))

    async def _retire(self, replica: Replica[S]) -> None:
        """A replica no longer named: its requests finish (up to RETIRE_S), then it closes."""
        deadline = time.monotonic() + RETIRE_S
        while replica.stream.load and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await replica.stream.close()
        await replica.channel.close()
