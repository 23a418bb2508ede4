"""The template service's compile workers: spawned before the tokenizer is loaded (their imports
overlap the service's start), handed its info at start(), and replaced, info and all, when a
compile passes the deadline. Real worker processes and real xgrammar."""

from __future__ import annotations

import asyncio
import json

import xgrammar as xgr

from toolwire.constraints.dialects import STRUCTURAL_TAG
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.constraints.outcome import Outcome
from toolwire.constraints.pool import CompilePool
from toolwire.runtime import model_source

SIMPLE = Constraint(Kind.JSON_SCHEMA, json.dumps({"type": "object", "properties": {}}))
# Sixty properties with bounded-repetition patterns: seconds of xgrammar compile on a real vocab.
SLOW = Constraint(
    Kind.JSON_SCHEMA,
    json.dumps(
        {
            "type": "object",
            "required": [f"p{i}" for i in range(60)],
            "properties": {
                f"p{i}": {"type": "string", "pattern": "[a-z]{1,30}@[a-z]{1,30}"} for i in range(60)
            },
        }
    ),
)


def test_workers_spawned_early_take_the_info_at_start_and_are_replaced_with_it():
    tokenizer = model_source.load_tokenizer(model_source.resolve("embedded"))
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=49152).serialize_json()

    async def run():
        pool = CompilePool(workers=1, timeout_s=0.5)
        pool.spawn()  # no info yet: the worker imports xgrammar meanwhile
        await pool.start(info)
        try:
            first = await pool.check(SIMPLE, STRUCTURAL_TAG)
            slow = await pool.check(SLOW, STRUCTURAL_TAG)
            other = Constraint(Kind.JSON_SCHEMA, json.dumps({"type": "string"}))
            # The stuck worker is killed and a new one started: the next compile waits for it.
            return first, slow, await asyncio.wait_for(pool.check(other, STRUCTURAL_TAG), 60)
        finally:
            pool.close()

    first, slow, replaced = asyncio.run(run())
    assert first.outcome is Outcome.OK
    assert slow.outcome is Outcome.TIMEOUT
    assert replaced.outcome is Outcome.OK  # the new worker got the tokenizer's info too
