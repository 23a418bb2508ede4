"""Constraint compiles in worker processes with a deadline.

xgrammar's compile is native code that cannot be interrupted: a pathological schema (dozens of
properties with bounded-repetition patterns take seconds) would hold the template service's
threads for everyone. Here each compile runs in a worker process; one that passes the deadline
is killed and replaced, and its request gets a 400. The worker also writes the constraint in
the decode engine's dialect (compiler.check_in_dialect). Results are cached by constraint and
dialect (failures and timeouts too), so a repeated tool set costs no round trip and a repeated
bad schema no worker.

One worker always runs; up to `workers` do where compiles come together. Each costs 52 MB of
resident memory (the vocabulary and xgrammar), and a tool set compiles once, so most of the
time one is all a service uses. When every running worker is busy, a compile starts one more
(280 ms to ready on 2 cores, against seconds for a schema near the deadline) and takes
whichever frees first; a worker that a whole minute did not need exits.
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
RETIRE_S = 60.0  # a window in which fewer workers were busy at once than run: the rest exit
CRASHED = CompileResult(Outcome.INVALID, message="the constraint compiler crashed on this schema")
NO_WORKER = CompileResult(Outcome.UNAVAILABLE, message="no grammar worker would start")


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
        self.size = max(1, workers)  # the most that run at once
        self.timeout_s = timeout_s
        self.cache: collections.OrderedDict[tuple[Constraint, str], CompileResult] = (
            collections.OrderedDict()
        )
        self.cache_size = cache_size
        # The least recently used first; None tells a waiting compile that no worker runs.
        self.idle: asyncio.Queue[_Process | None] = asyncio.Queue()
        self.spawned: list[_Process] = []
        self.running = 0  # workers started (or starting) and not killed
        self.busy = self.peak = 0  # compiling now; the most at once in this window
        self.waiting = 0  # compiles waiting for an idle worker
        self.compiles = self.cache_hits = self.timeouts = 0
        self.observe = observe or (lambda seconds: None)  # compile time, for a histogram
        self._retiring: asyncio.Task | None = None
        # Workers being started: the loop holds only weak references to its tasks.
        self._starting: set[asyncio.Task] = set()

    def spawn(self) -> None:
        """Start the first worker now: its imports (xgrammar, a second of the template
        service's start) run while the caller loads the tokenizer start() needs."""
        if not self.running:
            self.spawned.append(_Process())
            self.running = 1

    async def start(self, info_json: str | None = None) -> None:
        self.info_json = info_json or self.info_json
        self.spawn()
        info = self.info_json
        assert info is not None, "the tokenizer's info comes with the pool or with start()"
        while self.spawned:
            worker = self.spawned.pop()
            self.idle.put_nowait(await asyncio.to_thread(worker.configure, info))
        self._retiring = asyncio.get_running_loop().create_task(self._retire())

    def close(self) -> None:
        if self._retiring is not None:
            self._retiring.cancel()
        for worker in self.spawned:
            worker.kill()
        self.spawned = []
        while not self.idle.empty():
            if (idle := self.idle.get_nowait()) is not None:
                idle.kill()
        self.running = 0

    async def check(self, constraint: Constraint, dialect: str) -> CompileResult:
        """The constraint compiled and written in `dialect`, or why not (a timeout too)."""
        key = (constraint, dialect)
        if key in self.cache:
            self.cache.move_to_end(key)
            self.cache_hits += 1
            return self.cache[key]
        if self.running < self.size and (self.idle.empty() or not self.running):
            self.running += 1  # every worker is busy (or none would start): one more
            self._start(self._add())
        self.waiting += 1
        try:
            worker = await self.idle.get()
        finally:
            self.waiting -= 1
        if worker is None:  # the last worker was lost and none would start in its place
            return NO_WORKER  # not remembered: the next compile tries a worker again
        self.compiles += 1
        self.busy += 1
        self.peak = max(self.peak, self.busy)
        t0 = time.perf_counter()
        try:
            worker.conn.send(key)
            done = await asyncio.to_thread(worker.conn.poll, self.timeout_s)
            result = worker.conn.recv() if done else TIMEOUT
        except (EOFError, OSError):  # the worker died (out of memory in a compile)
            done, result = False, CRASHED
        finally:
            self.busy -= 1
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
            self._start(self._replace(worker))
        self._remember(key, result)
        return result

    def _start(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _replace(self, worker: _Process) -> None:
        await asyncio.to_thread(worker.kill)
        await self._add()

    async def _add(self) -> None:
        """A new worker, configured, into the idle queue (counted in `running` already)."""
        info = self.info_json
        assert info is not None, "start() configured the pool before it could grow"
        try:
            worker = await asyncio.to_thread(lambda: _Process().configure(info))
        except (RuntimeError, OSError, EOFError) as e:  # it would not start, or died
            self.running -= 1
            log.warning("a grammar worker did not start (%s): %d running", e, self.running)
            if not self.running:  # nothing will free: the waiting compiles fail, not hang
                for _ in range(self.waiting):
                    self.idle.put_nowait(None)
            return
        self.idle.put_nowait(worker)

    async def _retire(self) -> None:
        """Each window, the workers beyond the most that were busy at once (one at least)
        exit, the least recently used first."""
        while True:
            await asyncio.sleep(RETIRE_S)
            keep = max(1, self.peak)
            while self.running > keep and not self.idle.empty():
                worker = self.idle.get_nowait()
                if worker is None:  # owed to a waiting compile
                    self.idle.put_nowait(None)
                    break
                self.running -= 1
                await asyncio.to_thread(worker.kill)
            self.peak = self.busy

    def _remember(self, key: tuple[Constraint, str], result: CompileResult) -> None:
        self.cache[key] = result
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
