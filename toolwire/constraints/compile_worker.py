"""The compile pool's worker process (pool.py): compiles whatever (constraint, dialect) arrives
and answers its CompileResult.

    python -m toolwire.constraints.compile_worker FD   # FD: its end of the pool's socket pair

A compile needs no torch, and torch's import would be most of the worker's memory: torch is
kept out here, before the compiler (and through it xgrammar and transformers) loads.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from toolwire.runtime.freed_memory import return_freed_memory
from toolwire.runtime.without_torch import keep_torch_out

keep_torch_out()

from toolwire.constraints import xgrammar_core as xgr  # noqa: E402  (after torch is out)
from toolwire.constraints.compiler import check_in_dialect  # noqa: E402


def serve(conn: Connection) -> None:
    """Take the tokenizer's info, say ready, then compile until the pipe closes."""
    try:
        info_json = conn.recv()
    except (EOFError, KeyboardInterrupt):
        return
    compiler = xgr.GrammarCompiler(
        xgr.TokenizerInfo.deserialize_json(info_json), max_threads=1, cache_enabled=False
    )
    return_freed_memory()  # the tokenizer info's JSON and the imports' temporaries
    conn.send("ready")
    while True:
        try:
            constraint, dialect = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        conn.send(check_in_dialect(compiler, constraint, dialect))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
