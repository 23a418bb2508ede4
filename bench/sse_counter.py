"""The serving ceiling's lean clients: many streamed chat completions over raw HTTP/1.1, each
response's SSE content events counted in its bytes (no HTTP framing decoded, no JSON parsed),
its token count read off the usage chunk at the end.

Why lean: the client shares the 2 cores with the services it measures, so every µs it spends a
token is taken from them. Measured at 256 streams x 256 tokens, every token its own event (µs
of CPU per token, bench.ceiling's client column): a StreamReader and a task per connection 25;
an asyncio protocol (a callback per arrival, no wake-up) 10-16; one epoll loop over all the
sockets (`epoll`, the default: a recv and a count per arrival, no event-loop machinery) is
measured in bench/results/ceiling-null.txt. `bench.ceiling --client httpx` runs the full
client (bench/remote.py: every event parsed as JSON) to check these counts.

A response that is not a 200 ending in `data: [DONE]` raises: counting it would flatter the
rate.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time

CONTENT = b'"content":"'  # a delta with text (the role chunk has "content":null)
TAIL = 1024  # bytes kept: the usage chunk and [DONE] arrive last


class Count:
    """One response as its bytes arrive: content events, seconds to the first, the last bytes."""

    __slots__ = ("start", "events", "first", "tail", "status", "times")

    def __init__(self, start: float):
        self.start = start
        self.events, self.first, self.tail, self.status = 0, None, b"", b""
        self.times: list[float] = []  # arrival time of each content event (bench.run's ITL)

    def feed(self, data: bytes) -> None:
        if not self.status:
            self.status = data[:12]  # b"HTTP/1.1 200"
        # A match may straddle two arrivals: look from the last len(CONTENT) - 1 bytes on.
        n = (self.tail[1 - len(CONTENT) :] + data).count(CONTENT)
        if n:
            now = time.perf_counter()
            if self.first is None:
                self.first = now - self.start
            self.events += n
            self.times.extend([now] * n)
        self.tail = (self.tail + data)[-TAIL:]

    def result(self) -> tuple[int, int, float]:
        """(completion tokens, content events, seconds to the first content event)."""
        tail = self.tail
        if self.status != b"HTTP/1.1 200" or b"data: [DONE]" not in tail:
            raise RuntimeError(f"bad response: {self.status!r} ... {tail[-300:]!r}")
        at = tail.rfind(b'"completion_tokens":')
        tokens = int(tail[at + 20 :].split(b",", 1)[0].split(b"}", 1)[0]) if at >= 0 else 0
        return tokens, self.events, self.first if self.first is not None else float("nan")

    def usage(self) -> dict:
        """The usage chunk's object (the last data line before [DONE])."""
        for line in reversed(self.tail.split(b"\n")):
            if line.startswith(b"data: {") and b'"usage":' in line:
                return json.loads(line[6:]).get("usage") or {}
        return {}


def http_request(host: str, path: str, key: str, payload: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload


class _Protocol(asyncio.Protocol):
    def __init__(self, request: bytes):
        self.request = request
        self.count = Count(time.perf_counter())
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.count.feed(data)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run_asyncio(host: str, port: int, requests: list[bytes]) -> list[tuple]:
    """Each request on its own connection, read by an asyncio protocol."""

    async def one(request: bytes) -> tuple:
        proto = _Protocol(request)
        await asyncio.get_running_loop().create_connection(lambda: proto, host, port)
        await proto.done
        return proto.count.result()

    return await asyncio.gather(*(one(r) for r in requests))


def run_epoll(host: str, port: int, requests: list[bytes]) -> list[tuple]:
    """Each request on its own connection, all read by one epoll loop (blocks until every
    response has ended)."""
    return [c.result() for c in run_epoll_counts(host, port, requests)]


def run_epoll_counts(host: str, port: int, requests: list[bytes]) -> list[Count]:
    """run_epoll's loop: each response's Count, in the order of the requests."""
    ep = select.epoll()
    socks, counts, unsent = {}, {}, {}
    for request in requests:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        fd = s.fileno()
        socks[fd], unsent[fd] = s, request
        counts[fd] = Count(time.perf_counter())
        ep.register(fd, select.EPOLLOUT)
    results = list(counts.values())  # in the order of the requests
    open_fds = set(socks)
    try:
        while open_fds:
            for fd, _mask in ep.poll():
                s = socks[fd]
                if fd in unsent:  # connected (or failed: the send raises)
                    request = unsent[fd]
                    n = s.send(request)
                    if n < len(request):
                        unsent[fd] = request[n:]
                        continue
                    del unsent[fd]
                    ep.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                count = counts[fd]
                if data:
                    count.feed(data)
                    continue
                ep.unregister(fd)
                s.close()
                open_fds.discard(fd)
                count.result()  # a bad response raises now, as it ends
    finally:
        for fd in open_fds:
            socks[fd].close()
        ep.close()
    return results
