"""Continuous batching over one step: which tokens each forward pass computes, and what
becomes of the logits.

Each iteration runs one forward over a mix of spans: one new token for every decoding
sequence, the forced tokens of those that jumped, and up to `prefill_chunk` prompt tokens of
the waiting requests (several prompts together, a long one cut into chunks), so a running
stream never waits for more than one chunk of someone else's prompt. Decoding sequences sit
in cache slots 0..n-1, in order, so one view of the cache covers them.

The scheduler runs on one thread of its own (the engine's); requests arrive from the event
loop through `enqueue` and `abort`, under `wake`. Outputs go back to each request's loop once
per step (`_flush`), not once per token.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

# After the service keeps torch out, where it does (services/decode/step_choice.py): this
# loads xgrammar without its torch-importing package __init__ there.
from toolwire.constraints import xgrammar_core as xgr
from toolwire.runtime.cpus import IdleCpus
from toolwire.vocabulary import FinishReason

from . import sampling
from .drafts import PromptLookup, StepCost
from .engine import EngineBusy, EngineOutput, EngineRequest, EngineStats
from .jump_forward import forced_tokens
from .prefix_cache import Entry, PrefixCache, common_prefix
from .step_threads import StepThreads
from .steps import Span, Step
from .steps.ggml import KVPoolFull

log = logging.getLogger("toolwire.decode")

# How often a step below its thread ceiling reads the CPUs' idle time (/proc/stat, ~30 us).
IDLE_READ_S = 0.2

# Shorter shared prefixes are not worth a copy (every chat prompt shares its first few tokens).
MIN_REUSE = 8


@dataclass
class Sequence:
    request: EngineRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue  # or any sink with put_nowait (submit)
    matcher: xgr.GrammarMatcher | None
    generator: Any  # sampling.generator(): numpy's or torch's, by the step's logits
    stop_ids: frozenset
    max_tokens: int
    slot: int = -1
    last_token: int = 0
    position: int = 0  # tokens in the cache (while prefilling: how much of the prompt)
    completion: int = 0
    aborted: bool = False
    finish: FinishReason | None = None
    enqueued: float = 0.0  # time.monotonic() when it joined the queue
    timed_out: bool = False  # waited longer than queue_timeout for a slot
    # what prefills: the prompt, then any forced tokens (set when admitted)
    feed: list[int] = field(default_factory=list)
    cached: int = 0  # prompt tokens whose KV was reused, not prefilled
    jump: list[int] | None = None  # forced tokens to run after last_token, in one forward
    drafts: PromptLookup | None = None  # speculation's drafter (drafts.py); None: off
    completed: bool = False  # the matcher's is_completed() after the last token (jump_forward)

    @property
    def temperature(self) -> float:
        return self.request.temperature

    @property
    def top_p(self) -> float:
        return self.request.top_p


def _inference(step: Step) -> AbstractContextManager[object]:
    """torch's inference mode around a torch step's forward passes and sampling; nothing for
    the ggml step, which runs without torch."""
    if not step.uses_torch:
        return contextlib.nullcontext()
    import torch

    return torch.inference_mode()


def _deliver(items: list) -> None:
    for queue, out in items:
        queue.put_nowait(out)


class Scheduler:
    def __init__(
        self,
        step: Step,
        tokenizer,
        vocab_size: int,
        max_batch: int,
        prefill_chunk: int,
        queue_timeout: float,
        prefix_cache: PrefixCache | None,
        jump_forward: bool,
        stats: EngineStats,
        threads: StepThreads | None = None,
        set_threads: Callable[[int], None] | None = None,
        speculate: bool = False,
    ):
        self.step = step
        # Prompt-lookup drafts verified in each forward (drafts.py); the step must return a
        # row a position for them.
        self.speculate = speculate and step.verifies_drafts
        self.cost: StepCost | None = None  # a forward's time by positions (measure_cost)
        # How many threads each step runs (step_threads.py), and how to change the step's.
        self.threads = threads
        self.set_threads = set_threads
        self.step_threads = threads.ceiling if threads else 0
        stats.step_threads = self.step_threads
        self.idle_cpus = IdleCpus() if threads is not None and threads.adaptive else None
        self._idle_read_at = 0.0
        self._idle_stepped = 0.0  # the policy's stepped seconds at that reading
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.queue_timeout = queue_timeout
        # From running sequences always (when on), from finished ones within the budget.
        # None: every prompt prefills whole.
        self.prefix_cache = prefix_cache
        self.jump_forward = jump_forward
        self.stats = stats
        self.pending: collections.deque[Sequence] = collections.deque()
        self.prefilling: list[Sequence] = []  # admitted, prompt not yet all in the cache
        self.running: list[Sequence] = []  # decoding; running[i] sits in cache slot i
        self.slots: list[Sequence | None] = [None] * max_batch
        self.by_id: dict[str, Sequence] = {}
        self.wake = threading.Condition()
        self.stopping = False
        self.fault: BaseException | None = None
        self.outbox: list[tuple] = []  # (loop, queue, output) until the step ends
        self.bitmask = xgr.allocate_token_bitmask(max_batch, vocab_size)
        self.probe = xgr.allocate_token_bitmask(1, vocab_size)  # only_stop_left's row
        self.verify_mask = xgr.allocate_token_bitmask(1, vocab_size)  # a draft's rows, one by one

    # -- from the event loop, under `wake` ----------------------------------------------------
    def enqueue(self, seq: Sequence) -> None:
        with self.wake:
            if self.fault is not None:  # nothing would run it: another replica may
                raise EngineBusy(f"the engine loop failed ({self.fault!r}); restarting")
            self.by_id[seq.request.request_id] = seq
            self.pending.append(seq)
            self.wake.notify()

    def notify(self) -> None:
        with self.wake:
            self.wake.notify()

    def abort(self, request_id: str) -> bool:
        seq = self.by_id.get(request_id)
        if seq is None:
            return False
        seq.aborted = True
        self.notify()
        return True

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()

    # -- the scheduler's thread -------------------------------------------------------------
    def run(self, on_fault: Callable[[], object]) -> None:
        """Iterate until stopped. A fault here must not hang every stream: all end with an
        abort, later requests are refused, and `on_fault` tells the engine (which exits)."""
        try:
            with _inference(self.step):
                while True:
                    with self.wake:
                        while not (
                            self.stopping or self.pending or self.prefilling or self.running
                        ):
                            self.wake.wait()
                        if self.stopping:
                            break
                    self._drop_finished()
                    self._admit()
                    self._flush()  # the admitted requests' forced text, before the forward
                    if self.running or self.prefilling:
                        try:
                            self._iterate()
                        except KVPoolFull as e:
                            self._abort_all(e)
                    self._drop_finished()
                    self._flush()
        except Exception as e:
            log.exception("engine loop failed")
            with self.wake:
                self.fault = e
                seqs = list(self.by_id.values())
                self.by_id.clear()
            for seq in seqs:
                out = EngineOutput(
                    [], FinishReason.ABORT, len(seq.request.prompt_ids), seq.completion
                )
                self._emit(seq, out)
            self._flush()
            on_fault()

    def _abort_all(self, why: Exception) -> None:
        """The ggml step's shared KV pool ran out mid-step: end what holds it (abort), keep
        serving. The pool is sized by --kv-tokens; the torch step reserves each slot's room."""
        log.error("%s: aborting %d requests", why, len(self.running) + len(self.prefilling))
        for s in self.running + self.prefilling:
            if s.finish is None:
                self._finish(s, FinishReason.ABORT)

    def _admit(self) -> None:
        """Give waiting requests a cache slot; their prompts then prefill in chunks. Requests
        that left, or waited past queue_timeout, leave the queue first."""
        if self.pending:
            now = time.monotonic()
            for seq in list(self.pending):
                if seq.aborted or now - seq.enqueued > self.queue_timeout:
                    with self.wake:
                        self.pending.remove(seq)
                    seq.timed_out = not seq.aborted
                    self.stats.queue_timeouts += seq.timed_out
                    self._finish(seq, FinishReason.ABORT)
        while self.pending and len(self.running) + len(self.prefilling) < self.max_batch:
            with self.wake:
                seq = self.pending.popleft()
            if seq.aborted:
                self._finish(seq, FinishReason.ABORT)
                continue
            # What the grammar forces before the first free token prefills with the prompt,
            # and goes to the caller now, as a jump after a sampled token does: it is the
            # output whatever the forward computes.
            forced, ends = self._forced(seq)
            if ends:  # the grammar allows one output: no slot, no forward, nothing reused
                self._finish(seq, FinishReason.STOP, forced)
                continue
            seq.slot = self.slots.index(None)
            self.slots[seq.slot] = seq
            seq.feed = seq.request.prompt_ids
            self._reuse(seq)
            if self.speculate:
                seq.drafts = PromptLookup(seq.request.prompt_ids)
            if forced:
                seq.feed = seq.feed + forced
                self._emit(seq, EngineOutput(forced))
                if seq.drafts is not None:
                    seq.drafts.extend(forced)
            self.prefilling.append(seq)

    def _forced(self, seq: Sequence) -> tuple[list[int], bool]:
        if not self.jump_forward:
            return [], False
        return forced_tokens(seq, self.tokenizer, self.probe, self.stats)

    def _reuse(self, seq: Sequence) -> None:
        """Start seq from the longest prefix of its prompt whose KV is already computed: in a
        running sequence's slot or in the prefix cache. The step's min_prefill tokens at least
        are left to prefill (the last one's logits give the first sample)."""
        if self.prefix_cache is None:
            return
        prompt = seq.request.prompt_ids
        self.stats.prefix_queries += len(prompt)
        best = 0
        source: Sequence | Entry | None = None
        for other in self.running + self.prefilling:
            theirs = other.request.prompt_ids
            have = min(other.position, len(theirs))
            if have > best:
                n = common_prefix(theirs[:have], prompt)
                if n > best:
                    best, source = n, other
        entry, n = self.prefix_cache.lookup(prompt)
        if n > best:
            best, source = n, entry
        best = min(best, len(prompt) - self.step.min_prefill)
        if best < MIN_REUSE:
            return
        if isinstance(source, Sequence):
            self.step.copy_prefix(source.slot, seq.slot, best)
        else:
            assert source is not None, "best > 0 came from a sequence or a cache entry"
            try:
                self.step.load(seq.slot, source.kv, best)
            except KVPoolFull:  # no room to put it back: prefill the whole prompt instead
                return
        seq.position = seq.cached = best
        self.stats.prefix_hits += best

    def _keep_prompt(self, seq: Sequence) -> None:
        """A finished sequence's prompt KV into the prefix cache (unless already there)."""
        cache, prompt = self.prefix_cache, seq.request.prompt_ids
        if cache is None or cache.budget <= 0 or seq.position < len(prompt):
            return
        if cache.covers(prompt):
            return
        saved, nbytes = self.step.save(seq.slot, len(prompt))
        cache.insert(list(prompt), saved, nbytes)

    def _prefill_spans(self) -> list[Span]:
        """Prompt chunks for this iteration, oldest request first, within the token budget.
        With nobody decoding there is nobody to stall: take a larger bite."""
        budget = self.prefill_chunk if self.running else 4 * self.prefill_chunk
        spans = []
        for seq in self.prefilling:
            if budget <= 0:
                break
            prompt = seq.feed
            n = min(budget, len(prompt) - seq.position)
            spans.append(Span(seq.slot, prompt[seq.position : seq.position + n], seq.position))
            budget -= n
        return spans

    def _log_switch(self) -> None:
        assert self.threads is not None and self.threads.last_switch is not None
        old, new, probe_s, mean_s = self.threads.last_switch
        log.info(
            "step threads %d -> %d: a step took %.1f ms on %d, %.1f ms on %d lately",
            old,
            new,
            probe_s * 1e3,
            new,
            mean_s * 1e3,
            old,
        )

    def _read_idle(self, policy: StepThreads) -> None:
        """Tell the policy how many CPUs sat idle beyond those the step's own threads left
        while no step ran (between requests, or waiting for one): those say nothing of a
        neighbour."""
        now = time.monotonic()
        if now - self._idle_read_at < IDLE_READ_S:
            return
        self._idle_read_at = now
        assert self.idle_cpus is not None
        reading = self.idle_cpus.read()
        stepped, self._idle_stepped = policy.stepped - self._idle_stepped, policy.stepped
        if reading is None:
            return
        idle, seconds = reading
        own = policy.current * max(0.0, 1 - stepped / seconds)
        policy.note_idle(max(0.0, idle - own))

    def _threads_for(self, tokens: int) -> int:
        """The thread count this step runs, the step's changed to it where it differs."""
        if self.threads is None:
            return 0
        policy = self.threads
        if self.idle_cpus is not None and policy.current < policy.ceiling:
            self._read_idle(policy)
        n = policy.choose(tokens)
        if n != self.step_threads and self.set_threads is not None:
            self.set_threads(n)
            self.step_threads = self.stats.step_threads = n
        return n

    def measure_cost(self) -> None:
        """Time forwards of 1, 2 and 9 positions in the spare slot (what drafts.StepCost
        fits); the engine is idle (called after warm-up)."""
        slot = self.max_batch
        prompt = list(range(100, 164))
        self.step.forward([], [Span(slot, prompt, 0)])

        def forward(n: int) -> float:
            t0 = time.perf_counter()
            self.step.forward([Span(slot, prompt[:n], len(prompt), every_row=n > 1)], [])
            return time.perf_counter() - t0

        self.cost = StepCost.measure(forward)
        self.step.release(slot)

    def _plan_drafts(self, positions: int) -> dict[int, list[int]]:
        """Each running sequence's draft for this forward, by slot: as long as it pays
        (drafts.PromptLookup.choose) at the positions the forward computes so far (`positions`
        before any draft), and cut where its grammar would refuse a token (a refused token is
        never verified)."""
        cost = self.cost
        assert cost is not None, "measure_cost() ran at load"
        drafts = {}
        for seq in self.running:
            if seq.drafts is None or seq.jump:
                continue
            room = seq.max_tokens - seq.completion - 1
            continuation, _ = seq.drafts.continuation(room)
            # Up to a stop token: what followed a match in the prompt may be the chat
            # template's end of turn, which the answer seldom writes there.
            for i, token in enumerate(continuation):
                if token in seq.stop_ids:
                    continuation = continuation[:i]
                    break
            if not continuation:
                continue
            rate = len(self.running) / cost.seconds(positions)

            def extra(k: int, n: int = positions) -> float:
                return cost.extra(n, k)

            k = seq.drafts.choose(continuation, extra, rate)
            draft = self._grammar_cut(seq, continuation[:k])
            if draft:
                drafts[seq.slot] = draft
                positions += len(draft)
        return drafts

    @staticmethod
    def _grammar_cut(seq: Sequence, draft: list[int]) -> list[int]:
        if not draft or seq.matcher is None:
            return draft
        taken = 0
        for token in draft:
            if not seq.matcher.accept_token(token):
                break
            taken += 1
        if taken:
            seq.matcher.rollback(taken)
        return draft[:taken]

    def _iterate(self) -> None:
        # A sequence with forced tokens runs them as a chunk right after its decode row (the
        # chunk attends to that row's key, written first in each layer); its next token is
        # sampled from the chunk's last row.
        jumping = [(s, s.jump) for s in self.running if s.jump]
        jumps = [Span(s.slot, jump, s.position + 1) for s, jump in jumping]
        prefill = self._prefill_spans()
        drafts = {}
        if self.speculate:
            undrafted = len(self.running) + sum(len(s.tokens) for s in jumps + prefill)
            drafts = self._plan_drafts(undrafted)
        decode = [
            Span(s.slot, [s.last_token, *d], s.position, every_row=True)
            if (d := drafts.get(s.slot))
            else Span(s.slot, [s.last_token], s.position)
            for s in self.running
        ]
        tokens = sum(len(s.tokens) for s in decode + jumps + prefill)
        n = self._threads_for(tokens)
        t0 = time.perf_counter()
        logits = self.step.forward(decode, jumps + prefill)
        took = time.perf_counter() - t0
        if self.threads is not None:
            self.threads.record(n, tokens, took)
            if self.threads.switches != self.stats.thread_switches:
                self.stats.thread_switches = self.threads.switches
                self._log_switch()
        self.stats.forward_s += took
        self.stats.steps += 1
        # Row r of the logits: each decode span's rows (a draft's: one a position), then the
        # jumps' and the prefills' last rows.
        decode_row, r = [], 0
        for span in decode:
            decode_row.append(r)
            r += len(span.tokens) if span.every_row else 1
        for s in self.running:
            s.position += 1
        jump_row = {}
        for i, (s, jump) in enumerate(jumping):
            s.position += len(jump)
            s.jump = None
            jump_row[s.slot] = r + i
        verifying = [
            (s, drafts[s.slot], decode_row[i])
            for i, s in enumerate(self.running)
            if drafts.get(s.slot)
        ]
        # Sequences whose prompt is now whole get their first token sampled with the rest.
        ready = [s for s in self.running if not drafts.get(s.slot)]
        rows = [
            jump_row.get(s.slot, decode_row[i])
            for i, s in enumerate(self.running)
            if not drafts.get(s.slot)
        ]
        first = r + len(jumps)
        for i, span in enumerate(prefill):
            seq = self.slots[span.slot]
            assert seq is not None, "a prefill span's slot holds its sequence"
            seq.position += len(span.tokens)
            if seq.position == len(seq.feed):
                ready.append(seq)
                rows.append(first + i)
        for seq, draft, row in verifying:
            self._verify(seq, draft, logits[row : row + len(draft) + 1])
        if not ready:
            return
        if len(rows) != logits.shape[0]:
            logits = logits[rows]
        for seq, token in zip(ready, self.sample(ready, logits)):
            if seq in self.prefilling:
                self.prefilling.remove(seq)
                if self._accept(seq, token):
                    self._start_decoding(seq)
                else:
                    self._free(seq)
            else:
                self._accept(seq, token)

    def _verify(self, seq: Sequence, draft: list[int], rows: Any) -> None:
        """Keep the longest prefix of the draft the model would have written, then one token
        of its own: row i is the logits after the draft's first i tokens, masked as the
        grammar stands after them. Greedy keeps a draft token where it is the argmax; with a
        temperature the speculative acceptance rule keeps the sampling distribution
        (sampling.accept_or_resample). What the cache holds past the kept tokens is dropped
        by the next forward, which starts at seq.position."""
        kept = 0  # draft tokens the model wrote too
        for i in range(len(draft) + 1):
            row = rows[i : i + 1]
            self.stats.mask_s += sampling.apply_masks([seq], row, self.verify_mask)
            proposed = draft[i] if i < len(draft) else None
            token = sampling.accept_or_resample(seq, row, proposed)
            kept += token == proposed
            if not self._accept(seq, token) or token != proposed or seq.jump:
                break  # finished, refused here, or forced text follows
            seq.position += 1  # the draft token's key is in the cache and the next row read it
        assert seq.drafts is not None, "a draft came from the sequence's drafter"
        seq.drafts.record(len(draft), kept)
        self.stats.spec_drafts += 1
        self.stats.spec_draft_tokens += len(draft)
        self.stats.spec_accepted_tokens += kept

    def sample(self, seqs: list[Sequence], logits: Any) -> list[int]:
        self.stats.mask_s += sampling.apply_masks(seqs, logits, self.bitmask)
        return sampling.pick(seqs, logits)

    def _accept(self, seq: Sequence, token: int) -> bool:
        """Record a sampled token; False when the sequence has finished."""
        if seq.aborted:
            self._finish(seq, FinishReason.ABORT)
            return False
        if seq.matcher is not None and not seq.matcher.accept_token(token):
            log.error("grammar refused its own masked token %d", token)
            self._finish(seq, FinishReason.ABORT)
            return False
        if token in seq.stop_ids or (seq.matcher is not None and seq.matcher.is_terminated()):
            self._finish(seq, FinishReason.STOP)
            return False
        seq.last_token = token
        seq.completion += 1
        self.stats.tokens += 1
        if seq.completion >= seq.max_tokens:
            self._finish(seq, FinishReason.LENGTH, [token])
            return False
        forced, ends = self._forced(seq)
        if ends:
            self._finish(seq, FinishReason.STOP, [token] + forced)
            return False
        if forced:
            seq.jump = forced
        if seq.drafts is not None:
            seq.drafts.extend([token] + forced)
        self._emit(seq, EngineOutput([token] + forced))
        return True

    def _emit(self, seq: Sequence, out: EngineOutput) -> None:
        self.outbox.append((seq.loop, seq.queue, out))

    def _flush(self) -> None:
        """Hand this iteration's outputs to their event loops: one wake-up per loop per step."""
        if not self.outbox:
            return
        by_loop: dict = {}
        for loop, queue, out in self.outbox:
            by_loop.setdefault(loop, []).append((queue, out))
        self.outbox = []
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items)

    def _finish(self, seq: Sequence, reason: FinishReason, last: list[int] | None = None) -> None:
        seq.finish = reason
        self.stats.aborts += reason == FinishReason.ABORT and not seq.timed_out
        out = EngineOutput(
            last or [], reason, len(seq.request.prompt_ids), seq.completion, seq.cached
        )
        self._emit(seq, out)
        with self.wake:
            self.by_id.pop(seq.request.request_id, None)

    # -- cache slots ----------------------------------------------------------------------------
    def _relocate(self, seq: Sequence, slot: int) -> None:
        """Put seq's cache rows in `slot`, swapping with whoever holds it (via the spare)."""
        if seq.slot == slot:
            return
        other, spare = self.slots[slot], self.max_batch
        if other is not None:
            self.step.move(slot, spare, other.position)
        self.step.move(seq.slot, slot, seq.position)
        if other is not None:
            self.step.move(spare, seq.slot, other.position)
            other.slot = seq.slot
        self.slots[seq.slot] = other
        self.slots[slot] = seq
        seq.slot = slot

    def _start_decoding(self, seq: Sequence) -> None:
        self._relocate(seq, len(self.running))
        self.running.append(seq)

    def _free(self, seq: Sequence) -> None:
        if 0 <= seq.slot < len(self.slots) and self.slots[seq.slot] is seq:
            self._keep_prompt(seq)
            self.step.release(seq.slot)
            self.slots[seq.slot] = None
        seq.slot = -1

    def _drop_finished(self) -> None:
        for s in self.running + self.prefilling:
            if s.aborted and s.finish is None:
                self._finish(s, FinishReason.ABORT)
        for s in [s for s in self.prefilling if s.finish is not None]:
            self.prefilling.remove(s)
            self._free(s)
        if all(s.finish is None for s in self.running):
            return
        keep = [s for s in self.running if s.finish is None]
        for s in self.running:
            if s.finish is not None:
                self._free(s)
        self.running = []
        for s in keep:  # close the gaps, keeping the order
            self._relocate(s, len(self.running))
            self.running.append(s)
