"""The null engine (`--model null`): tokens without a forward pass, to measure the serving path.

Why: with a real model the forward pass hides what the services cost; here the engine costs
next to nothing, so the gateway, the decode service's streams and the extractor are measured
on their own (the serving ceiling, bench/ceiling.py). It keeps the engine contract where it
applies: max_tokens (finish "length"), the request's stop ids (a stop id is not streamed;
finish "stop"), abort and closing the stream (finish "abort", the slot freed at the next
step), the queue bound and queue timeout, the token counts. Seeds and temperature do not
matter: the output is a fixed cycle of ordinary vocabulary tokens of the embedded model's
tokenizer (real words, so the extractor's detokenizer does real work), every request starting
at the cycle's first token.

Constraints are honoured, not ignored: a constrained request gets xgrammar's mask each step and
takes, of the tokens the grammar allows, the first of: a stop id (ends as soon as the grammar
may end), a closing token (`"`, `}`, `]`: strings and objects end early), the cycle's token,
the lowest allowed id. The result is always valid (the engine contract's constraint tests run
against it); it is not meant to be useful text. Without a constraint no mask is computed.

Steps run on the service's event loop, one step per loop turn while requests are running
(or one per `--null-step-ms`, a GPU's step time, to offer the serving path a given rate):
each step gives every running request one token, pushed to its sink (the multiplexed
stream's pending frame) directly, so a step costs the decode process what the serving path
costs and almost nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolwire.constraints.dialects import engine_dialect
from toolwire.runtime import model_source
from toolwire.vocabulary import FinishReason

from .engine import (
    Engine,
    EngineInfo,
    EngineLoad,
    EngineOutput,
    EngineRequest,
    EngineStats,
    OutputSink,
    check_engine_request,
    constraint_matcher,
    queued_outputs,
)

# The text whose tokens the engine cycles through: ordinary words, spaces and punctuation.
CYCLE_TEXT = (
    " The quick brown fox jumps over the lazy dog, and the traveller walks on through the"
    " quiet town until the evening light falls across the river."
)
CLOSERS = ('"', "}", "]")


if TYPE_CHECKING:
    from toolwire.constraints import xgrammar_core as xgr


@dataclass
class _Seq:
    request: EngineRequest
    sink: OutputSink  # put_nowait(EngineOutput); fail(exc) for a submit() sink
    max_tokens: int
    stop_ids: frozenset
    matcher: xgr.GrammarMatcher | None
    enqueued: float
    completion: int = 0
    aborted: bool = False
    timed_out: bool = False
    finished: bool = False


class NullEngine(Engine):
    def __init__(
        self,
        max_batch: int = 256,
        max_model_len: int | None = None,
        queue_timeout: float = 120.0,
        step_s: float = 0.0,
    ):
        self.source = model_source.resolve(model_source.NULL)
        self.max_batch = max_batch
        self.requested_len = max_model_len
        self.queue_timeout = queue_timeout
        self.step_s = step_s  # a step's duration; 0: one step per event-loop turn
        self.running: list[_Seq] = []
        self.pending: collections.deque[_Seq] = collections.deque()
        self.by_id: dict[str, _Seq] = {}
        self.stats: EngineStats = EngineStats()
        self.wake: asyncio.Event  # set by start()
        self.task: asyncio.Task | None = None

    @property
    def model_id(self) -> str:
        return self.source.default_id

    # -- lifecycle -----------------------------------------------------------------------
    def load(self) -> None:
        from toolwire.constraints.compiler import ConstraintCompiler

        self.tokenizer = model_source.load_tokenizer(self.source)
        limit, vocab = model_source.config_sizes(self.source)
        limit = limit or 8192
        max_len = min(self.requested_len or limit, limit)
        self.info = EngineInfo(
            "null",
            max_len,
            vocab,
            self.max_batch,
            engine_dialect(importlib.metadata.version("xgrammar")),
        )
        self.cycle = self.tokenizer.encode(CYCLE_TEXT, add_special_tokens=False)
        self.closers = [
            ids[0]
            for c in CLOSERS
            if len(ids := self.tokenizer.encode(c, add_special_tokens=False)) == 1
        ]
        self.compiler = ConstraintCompiler(self.tokenizer, vocab, [self.tokenizer.eos_token_id])

    async def start(self) -> None:
        await asyncio.to_thread(self.load)
        from toolwire.constraints import xgrammar_core as xgr

        self.bitmask = xgr.allocate_token_bitmask(1, self.info.vocab_size)
        self.bits = self.bitmask[0]
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for seq in list(self.by_id.values()):
            self._finish(seq, FinishReason.ABORT)

    def active_requests(self) -> int:
        return len(self.by_id)

    def occupancy(self) -> EngineLoad:
        return EngineLoad(len(self.running), len(self.pending), 0.0)

    # -- requests ------------------------------------------------------------------------
    async def submit(self, request: EngineRequest, sink) -> _Seq:
        check_engine_request(request, self.info, self.by_id)
        matcher = await constraint_matcher(self.compiler, request)
        room = self.info.max_model_len - len(request.prompt_ids)
        seq = _Seq(
            request,
            sink,
            min(request.max_tokens, room) if request.max_tokens else room,
            frozenset(request.stop_ids),
            matcher,
            time.monotonic(),
        )
        self.by_id[request.request_id] = seq
        self.pending.append(seq)
        self.wake.set()
        return seq

    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineOutput, None]:
        return queued_outputs(self, request, self.wake.set)

    async def abort(self, request_id: str) -> bool:
        seq = self.by_id.get(request_id)
        if seq is None:
            return False
        seq.aborted = True
        self.wake.set()
        return True

    # -- the step loop -------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if not (self.running or self.pending):
                self.wake.clear()
                await self.wake.wait()
                due = loop.time()
            self._admit()
            if self.running:
                self._step()
            if not self.step_s:
                await asyncio.sleep(0)  # one step per loop turn: the writers run between
                continue
            # Steps at a fixed cadence, as a GPU's would come; one that ran late is not made up.
            due = max(due + self.step_s, loop.time())
            await asyncio.sleep(due - loop.time())

    def _admit(self) -> None:
        if not self.pending:
            return
        now = time.monotonic()
        for seq in [s for s in self.pending if s.aborted or now - s.enqueued > self.queue_timeout]:
            self.pending.remove(seq)
            seq.timed_out = not seq.aborted
            self.stats.queue_timeouts += seq.timed_out
            self._finish(seq, FinishReason.ABORT)
        while self.pending and len(self.running) < self.max_batch:
            self.running.append(self.pending.popleft())

    def _step(self) -> None:
        cycle, n = self.cycle, len(self.cycle)
        ended = False
        for seq in self.running:
            if seq.aborted:
                self._finish(seq, FinishReason.ABORT)
                ended = True
                continue
            token = cycle[seq.completion % n] if seq.matcher is None else self._pick(seq)
            if token < 0 or token in seq.stop_ids:
                self._finish(seq, FinishReason.STOP)
                ended = True
                continue
            seq.completion += 1
            if seq.completion >= seq.max_tokens:
                self._finish(seq, FinishReason.LENGTH, [token])
                ended = True
            else:
                seq.sink.put_nowait(EngineOutput([token]))
        self.stats.steps += 1
        self.stats.tokens += len(self.running)
        if ended:
            self.running = [s for s in self.running if not s.finished]

    def _pick(self, seq: _Seq) -> int:
        """The constrained choice (see the module's docstring), accepted into the matcher."""
        bits = self.bits
        matcher = seq.matcher
        assert matcher is not None, "only a constrained sequence picks"
        matcher.fill_next_token_bitmask(self.bitmask, 0)

        def allowed(t: int) -> bool:
            return bool((int(bits[t >> 5]) >> (t & 31)) & 1)

        token = next(
            (
                t
                for t in (
                    *sorted(seq.stop_ids),
                    *self.closers,
                    self.cycle[seq.completion % len(self.cycle)],
                )
                if allowed(t)
            ),
            None,
        )
        if token is None:
            word = next((i for i, w in enumerate(bits) if w), None)
            if word is None:  # the grammar has ended: nothing more may come
                return -1
            low = int(bits[word]) & 0xFFFFFFFF
            token = word * 32 + (low & -low).bit_length() - 1
        if token not in seq.stop_ids:
            matcher.accept_token(token)
        return token

    def _finish(self, seq: _Seq, reason: FinishReason, last: list[int] | None = None) -> None:
        if seq.finished:
            return
        seq.finished = True
        self.stats.aborts += reason == FinishReason.ABORT and not seq.timed_out
        self.by_id.pop(seq.request.request_id, None)
        seq.sink.put_nowait(
            EngineOutput(last or [], reason, len(seq.request.prompt_ids), seq.completion)
        )
