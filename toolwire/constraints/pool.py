"""Constraint compiles in worker processes with a deadline.

xgrammar's compile is native code that cannot be interrupted: a pathological schema (dozens of
properties with bounded-repetition patterns take seconds) would hold the template service's
threads for everyone. Here each compile runs in a worker process; one that passes the deadline
is killed and replaced, and its request gets a 400. The worker also writes the constraint in
the decode engine's dialect (toolwire/constraint_dialect.py). Results are cached by constraint
text and dialect (failures too), so a repeated tool set costs no round trip and a repeated bad
schema no worker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import time
from multiprocessing.connection import Connection

log = logging.getLogger("toolwire.template")

# Processes start with `spawn`: forking the gRPC server's process is unsafe.
_CTX = multiprocessing.get_context("spawn")


def _worker(conn: Connection, info_json: str) -> None:
    """In the worker process: compile whatever arrives and write it in the dialect asked for;
    answer ("ok", kind, text), ("invalid", xgrammar's message) or ("dialect" or
    "dialect-schema", why not)."""
    import xgrammar as xgr

    from toolwire.constraints.ebnf import DialectError
    from toolwire.constraints.compiler import grammar_of, in_dialect

    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.deserialize_json(info_json), max_threads=1,
                                   cache_enabled=False)
    conn.send("ready")
    while True:
        try:
            kind, text, dialect = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        try:
            grammar = grammar_of(kind, text)
            compiler.compile_grammar(grammar)
            conn.send(("ok", *in_dialect(kind, text, dialect, grammar)))
        except DialectError as e:  # the engine's dialect cannot state this constraint
            conn.send(("dialect-schema" if e.schema else "dialect", str(e)))
        except Exception as e:  # xgrammar refuses the schema: the request's fault
            conn.send(("invalid", str(e) or type(e).__name__))


class CompileTimeout(Exception):
    pass


class _Process:
    def __init__(self, info_json: str):
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_worker, args=(child, info_json), daemon=True,
                                 name="toolwire-grammar")
        self.proc.start()
        child.close()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the grammar worker did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class CompilePool:
    def __init__(self, info_json: str, workers: int = 1, timeout_s: float = 10.0,
                 cache_size: int = 512, observe=None):
        self.info_json = info_json
        self.size = max(1, workers)
        self.timeout_s = timeout_s
        self.cache: collections.OrderedDict[tuple[str, str, str], tuple[str, ...] | str] = (
            collections.OrderedDict())
        self.cache_size = cache_size
        self.idle: asyncio.Queue[_Process] = asyncio.Queue()
        self.compiles = self.cache_hits = self.timeouts = 0
        self.observe = observe or (lambda seconds: None)  # compile time, for a histogram

    async def start(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.to_thread(_Process, self.info_json))

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait().kill()

    async def check(self, kind: str, text: str, dialect: str) -> tuple[str, ...]:
        """("ok", kind, text) in `dialect`, ("invalid", xgrammar's message) or ("dialect", why
        the dialect cannot state it). Raises CompileTimeout."""
        key = (kind, text, dialect)
        if key in self.cache:
            self.cache.move_to_end(key)
            self.cache_hits += 1
            result = self.cache[key]
            if result == CompileTimeout.__name__:
                raise CompileTimeout()
            return result
        worker = await self.idle.get()
        self.compiles += 1
        t0 = time.perf_counter()
        try:
            worker.conn.send(key)
            done = await asyncio.to_thread(worker.conn.poll, self.timeout_s)
            result = worker.conn.recv() if done else CompileTimeout.__name__
        except (EOFError, OSError):  # the worker died (out of memory in a compile)
            done, result = False, ("invalid", "the constraint compiler crashed on this schema")
        self.observe(time.perf_counter() - t0)
        if done:
            self.idle.put_nowait(worker)
        else:
            self.timeouts += result == CompileTimeout.__name__
            log.warning("a constraint took over %.1f s to compile (%.1f s): worker replaced",
                        self.timeout_s, time.perf_counter() - t0)
            asyncio.get_running_loop().create_task(self._replace(worker))
        self._remember(key, result)
        if result == CompileTimeout.__name__:
            raise CompileTimeout()
        return result

    async def _replace(self, worker: _Process) -> None:
        await asyncio.to_thread(worker.kill)
        self.idle.put_nowait(await asyncio.to_thread(_Process, self.info_json))

    def _remember(self, key: tuple[str, str, str], result: tuple[str, ...] | str) -> None:
        self.cache[key] = result
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
