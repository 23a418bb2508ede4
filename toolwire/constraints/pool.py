"""Constraint compiles in worker processes with a deadline.

xgrammar's compile is native code that cannot be interrupted: a pathological schema (dozens of
properties with bounded-repetition patterns take seconds) would hold the template service's
threads for everyone. Here each compile runs in a worker process; one that passes the deadline
is killed and replaced, and its request gets a 400. The worker also writes the constraint in
the decode engine's dialect (compiler.check_in_dialect). Results are cached by constraint and
dialect (failures and timeouts too), so a repeated tool set costs no round trip and a repeated
bad schema no worker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

from toolwire.constraints.kinds import Constraint
from toolwire.constraints.outcome import CompileResult, Outcome

log = logging.getLogger("toolwire.template")


TIMEOUT = CompileResult(Outcome.TIMEOUT)
CRASHED = CompileResult(Outcome.INVALID, message="the constraint compiler crashed on this schema")


class _Process:
    """A worker: `python -m toolwire.constraints.compile_worker`, a plain child process (not
    multiprocessing's spawn, which would import the service's own CLI module in the child and
    start a resource tracker: 9 MB a worker and 13 MB more for nothing here; forking the gRPC
    server's process is unsafe). Messages go over a socket pair as multiprocessing
    Connections: pickled, length-framed."""

    def __init__(self):
        mine, theirs = socket.socketpair()
        fd = theirs.fileno()
        # A worker outlives nothing: when this process goes, its socket closes and the
        # worker's recv ends it.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toolwire.constraints.compile_worker", str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(mine.detach())

    def configure(self, info_json: str) -> _Process:
        """Hand the worker its tokenizer's info; return once it can compile."""
        self.conn.send(info_json)
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the grammar worker did not start")
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.conn.close()


class CompilePool:
    def __init__(
        self,
        info_json: str | None = None,
        workers: int = 1,
        timeout_s: float = 10.0,
        cache_size: int = 512,
        observe=None,
    ):
        self.info_json = info_json
        self.size = max(1, workers)
        self.timeout_s = timeout_s
        self.cache: collections.OrderedDict[tuple[Constraint, str], CompileResult] = (
            collections.OrderedDict()
        )
        self.cache_size = cache_size
        self.idle: asyncio.Queue[_Process] = asyncio.Queue()
        self.spawned: list[_Process] = []
        self.compiles = self.cache_hits = self.timeouts = 0
        self.observe = observe or (lambda seconds: None)  # compile time, for a histogram

    def spawn(self) -> None:
        """Start the worker processes now: their imports (xgrammar and transformers, about a
        second of the template service's start) run while the caller loads the tokenizer
        start() needs."""
        self.spawned += [_Process() for _ in range(self.size - len(self.spawned))]

    async def start(self, info_json: str | None = None) -> None:
        self.info_json = info_json or self.info_json
        self.spawn()
        info = self.info_json
        assert info is not None, "the tokenizer's info comes with the pool or with start()"
        while self.spawned:
            worker = self.spawned.pop()
            self.idle.put_nowait(await asyncio.to_thread(worker.configure, info))

    def close(self) -> None:
        for worker in self.spawned:
            worker.kill()
        self.spawned = []
        while not self.idle.empty():
            self.idle.get_nowait().kill()

    async def check(self, constraint: Constraint, dialect: str) -> CompileResult:
        """The constraint compiled and written in `dialect`, or why not (a timeout too)."""
        key = (constraint, dialect)
        if key in self.cache:
            self.cache.move_to_end(key)
            self.cache_hits += 1
            return self.cache[key]
        worker = await self.idle.get()
        self.compiles += 1
        t0 = time.perf_counter()
        try:
            worker.conn.send(key)
            done = await asyncio.to_thread(worker.conn.poll, self.timeout_s)
            result = worker.conn.recv() if done else TIMEOUT
        except (EOFError, OSError):  # the worker died (out of memory in a compile)
            done, result = False, CRASHED
        self.observe(time.perf_counter() - t0)
        if done:
            self.idle.put_nowait(worker)
        else:
            self.timeouts += result.outcome is Outcome.TIMEOUT
            log.warning(
                "a constraint took over %.1f s to compile (%.1f s): worker replaced",
                self.timeout_s,
                time.perf_counter() - t0,
            )
            asyncio.get_running_loop().create_task(self._replace(worker))
        self._remember(key, result)
        return result

    async def _replace(self, worker: _Process) -> None:
        await asyncio.to_thread(worker.kill)
        info = self.info_json
        assert info is not None, "start() configured the pool before any worker could time out"
        self.idle.put_nowait(await asyncio.to_thread(lambda: _Process().configure(info)))

    def _remember(self, key: tuple[Constraint, str], result: CompileResult) -> None:
        self.cache[key] = result
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
