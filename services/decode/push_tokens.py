"""PushTokens: this replica's streams to the extractor pods, each step's routed tokens on them.

Why: a gateway that relays tokens pays three messages a step for each of its requests (decode
to gateway, gateway to extractor, extractor to gateway) and sees every token id twice. A
request started with an ExtractRoute (decode.proto) has its tokens sent from here straight to
the extractor pod that owns its extraction, which writes the deltas to the gateway: two
messages a step, and the gateway's hot path carries text only.

One stream per extractor address, shared by every GenerateStream of this replica. The engine
puts a step's tokens into the pending message of each link (no I/O, in the loop callback that
delivers the step); one writer per link sends it. A message not yet written when the next
step ends takes that step's tokens too, as GenerateStream's pending frame does.

A link that breaks (the pod died) fails every request routed on it, each on its own gateway
stream (generate_stream.py), and their engine work is aborted; the next request routed there opens a new
stream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence

import grpc

from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as xpb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2_grpc as xpb_grpc
from toolwire.plumbing.internal_security import ClientSecurity
from toolwire.wire_enums import finish_to_proto

log = logging.getLogger("toolwire.decode")

# A routed request's handle on its link: who to tell when the link breaks.
OnBroken = Callable[[str], None]


class PushTokensStream:
    """The PushTokens stream to one extractor pod, opened on first use and again after it
    broke."""

    def __init__(self, address: str, security: ClientSecurity):
        self.address = address
        self.security = security
        self.channel: grpc.aio.Channel | None = None
        self.call: grpc.aio.StreamUnaryCall | None = None
        self.writer: asyncio.Task | None = None
        self.has_mail = asyncio.Event()
        # session -> handle -> token ids not sent yet; session -> ends not sent yet
        self.tokens: dict[str, dict[int, list[int]]] = {}
        self.ends: dict[str, list[xpb.RoutedEnd]] = {}
        self.routed: dict[int, OnBroken] = {}  # requests on this link, by a link-wide key
        self.keys = itertools.count(1)

    def attach(self, on_broken: OnBroken) -> int:
        """A routed request starts: its key on this link, given back to `detach`."""
        if self.call is None:
            self._connect()
        key = next(self.keys)
        self.routed[key] = on_broken
        return key

    def detach(self, key: int) -> None:
        self.routed.pop(key, None)

    def put_tokens(self, session: str, handle: int, ids: Sequence[int]) -> None:
        pending = self.tokens.setdefault(session, {})
        held = pending.get(handle)
        if held is None:
            pending[handle] = list(ids)
        else:
            held.extend(ids)
        self.has_mail.set()

    def put_end(self, session: str, handle: int, finish_reason: str, usage: common.Usage) -> None:
        self.ends.setdefault(session, []).append(
            xpb.RoutedEnd(handle=handle, finish_reason=finish_to_proto(finish_reason), usage=usage)
        )
        self.has_mail.set()

    def take(self) -> xpb.TokenPush | None:
        """The pending message, emptied."""
        if not (self.tokens or self.ends):
            return None
        push = xpb.TokenPush()
        for session in self.tokens.keys() | self.ends.keys():
            tokens = self.tokens.get(session, {})
            push.sessions.add(
                session=session,
                handles=tokens.keys(),
                counts=[len(t) for t in tokens.values()],
                token_ids=list(itertools.chain.from_iterable(tokens.values())),
                ends=self.ends.get(session, ()),
            )
        self.tokens, self.ends = {}, {}
        return push

    async def close(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            call.cancel()
        if self.writer is not None:
            self.writer.cancel()
        if self.channel is not None:
            await self.channel.close()

    # -- internals ---------------------------------------------------------------------
    def _connect(self) -> None:
        if self.channel is None:
            self.channel = self.security.channel(self.address)
        stub = xpb_grpc.ExtractorServiceStub(self.channel)
        call = stub.PushTokens(metadata=self.security.metadata)
        self.call = call
        self.tokens, self.ends = {}, {}
        call.add_done_callback(lambda c: self._broken(c, "the extractor ended the token stream"))
        self.writer = asyncio.get_running_loop().create_task(self._write(call))

    async def _write(self, call: grpc.aio.StreamUnaryCall) -> None:
        try:
            while self.call is call:
                await self.has_mail.wait()
                self.has_mail.clear()
                push = self.take()
                if push is not None and self.call is call:
                    await call.write(push)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as e:
            self._broken(call, f"the token stream to the extractor broke ({e.__class__.__name__})")

    def _broken(self, call, why: str) -> None:
        """The stream ended: every request routed on it fails (its gateway is told by its
        GenerateStream, and its engine work aborted)."""
        if self.call is not call:
            return
        self.call = None
        if self.writer is not None and self.writer is not asyncio.current_task():
            self.writer.cancel()
        routed, self.routed = self.routed, {}
        if routed:
            log.warning("%s %s: failing its %d requests", why, self.address, len(routed))
        for on_broken in routed.values():
            on_broken(f"{why} ({self.address})")


class PushTokensStreams:
    """Every link of this replica, by extractor address."""

    def __init__(self, security: ClientSecurity | None = None):
        self.security = security or ClientSecurity()
        self.links: dict[str, PushTokensStream] = {}

    def get(self, address: str) -> PushTokensStream:
        link = self.links.get(address)
        if link is None:
            link = self.links[address] = PushTokensStream(address, self.security)
        return link

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
