"""The torch engine: transformers weights on CPU (or GPU), continuous batching, xgrammar masks.

One worker thread owns the model. Each iteration runs one forward pass over a mix of spans:
one new token for every decoding sequence, plus up to `prefill_chunk` prompt tokens of the
waiting requests (several prompts together, a long one cut into chunks), so a running stream
never waits for more than one chunk of someone else's prompt. Llama-family models run on
LlamaStep (plain torch over a slot cache); anything else on transformers' forward (HFStep). A
GGUF on a CPU runs on GgmlStep (llama.cpp's kernels, ggml_step.py) by default (`--step`).
Each sequence carries its own xgrammar matcher; its mask is applied to its row of logits.

Forced text goes to the caller when it is known, not when it is computed (issue 19). A tool call
under tool_choice required starts with 17 forced tokens (`<tool_call>\n{"name": "get_weather",
"arguments":`, jump-forward); 16 such requests admitted together prefill 16 x 18 rows in one
forward, 4.5-5 s at load 4 (a 16-row decode step: 0.1-0.7 s at that load, 89 ms quiet). The
opening used to go out with the first sampled token, after that forward, and a streamed call's
name with it: TTFT p50 1.4 s at 16 streams through the stack against llama.cpp's 0.2 s. It now
goes out at admission, as a jump after a sampled token always did, and the extractor names the
call on it (marked_calls.py): TTFT p50 248 / 722 / 2,714 -> 17 / 36 / 264 ms at 1 / 4 / 16
streams, load 3.6-4.5, one run (bench/results/ttft-19.txt). The first argument still comes
after that forward (2,640 ms at 16 streams there): 272 forced rows are the same compute
however they are batched.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.metadata
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import torch
import xgrammar as xgr

from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.constraints.dialects import engine_dialect
from toolwire.stack import model_source
from toolwire.stack.cpus import usable_cpus

from . import llama_step
from .engine import (
    Engine,
    EngineBusy,
    EngineInfo,
    EngineLoad,
    EngineOutput,
    EngineRequest,
    EngineStats,
    check_request,
    constraint_matcher,
    queued_outputs,
)
from .ggml_step import KVPoolFull
from .hf_step import HFStep
from .llama_step import LlamaStep, Span
from .prefix_cache import PrefixCache, common_prefix

# torch's own count (a thread per core it sees), read before any engine here changes it: a
# process may host a ggml engine (one torch thread) and then a torch one (tests, benches).
TORCH_DEFAULT_THREADS = torch.get_num_threads()

log = logging.getLogger("toolwire.decode")

# Shorter shared prefixes are not worth a copy (every chat prompt shares its first few tokens).
MIN_REUSE = 8


def pick_dtype(name: str) -> torch.dtype:
    """auto: bf16 where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32."""
    if name != "auto":
        return {
            "bf16": torch.bfloat16,
            "bfloat16": torch.bfloat16,
            "fp32": torch.float32,
            "float32": torch.float32,
            "fp16": torch.float16,
        }[name]
    if torch.cuda.is_available():
        return torch.bfloat16
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    # Measured on the embedded model, 2 cores: bf16 matches fp32 at one stream and batches
    # 1.5x better at 16 (bench/), where the CPU does bf16 natively.
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


def check_vocab(step, tokenizer) -> None:
    """The GGUF's vocabulary (llama.cpp's) and the tokenizer toolwire encodes with must agree:
    the same size and the same text at a spread of ids, special tokens included."""
    n = len(tokenizer)
    if step.n_vocab < n:
        raise SystemExit(f"the GGUF has {step.n_vocab} tokens, the tokenizer {n}")
    ids = sorted({0, 1, 2, tokenizer.eos_token_id, n // 7, n // 3, n // 2, n - 1})
    theirs = [step.token_text(i) for i in ids]
    ours = tokenizer.convert_ids_to_tokens(ids)
    if theirs != ours:
        raise SystemExit(f"GGUF and tokenizer vocabularies differ at ids {ids}: {theirs} vs {ours}")


def _deliver(items: list) -> None:
    for queue, out in items:
        queue.put_nowait(out)


@dataclass
class _Seq:
    request: EngineRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue  # or any sink with put_nowait (submit)
    matcher: xgr.GrammarMatcher | None
    generator: torch.Generator | None
    stop_ids: frozenset
    max_tokens: int
    slot: int = -1
    last_token: int = 0
    position: int = 0  # tokens in the cache (while prefilling: how much of the prompt)
    completion: int = 0
    aborted: bool = False
    finish: str | None = None
    enqueued: float = 0.0  # time.monotonic() when it joined the queue
    timed_out: bool = False  # waited longer than queue_timeout for a slot
    feed: list[int] | None = None  # what prefills: the prompt, then any forced tokens
    cached: int = 0  # prompt tokens whose KV was reused, not prefilled
    jump: list[int] | None = None  # forced tokens to run after last_token, in one forward
    completed: bool = False  # the matcher's is_completed() after the last token (_forced)


class TorchEngine(Engine):
    def __init__(
        self,
        model: str = model_source.EMBEDDED,
        dtype: str = "auto",
        max_batch: int = 32,
        max_model_len: int | None = None,
        threads: int | None = None,
        device: str = "cpu",
        prefill_chunk: int = 256,
        queue_timeout: float = 120.0,
        prefix_cache_mb: int = 1024,
        prefix_reuse: bool = True,
        jump_forward: bool = True,
        step: str = "auto",
        kv_tokens: int = 8192,
        kv_type: str | None = None,  # the ggml step's; None: q8_0
    ):
        self.source = model_source.resolve(model)
        if self.source.null:
            raise SystemExit("--model null runs on the null engine (null_engine.py), not torch")
        # int8: weight-only int8 matmuls, fp32 everywhere else (LlamaStep only). `auto` on a
        # CPU takes it where the step supports the model: decode there is bound by the bytes
        # of weights read per step (bench/: 2.3x the tokens/s of fp32 at one stream).
        self.int8 = dtype == "int8" or (dtype == "auto" and device == "cpu")
        self.int8_required = dtype == "int8"
        self.dtype = pick_dtype("fp32" if self.int8 else dtype)
        self.device = device
        self.max_batch = max_batch
        self.threads = threads
        self.torch_threads: int | None = None  # set by load(): torch's threads in the step
        self.prefill_chunk = prefill_chunk
        self.queue_timeout = queue_timeout
        # Prefix reuse: from running sequences always (when on), from finished ones within the
        # budget. None: every prompt prefills whole.
        self.prefix_cache = PrefixCache(prefix_cache_mb << 20) if prefix_reuse else None
        self.jump_forward = jump_forward
        if step not in ("auto", "torch", "ggml"):
            raise SystemExit(f"--step {step!r}: auto, torch or ggml")
        self.step_kind = step
        self.kv_tokens = kv_tokens
        self.kv_type = kv_type
        self.requested_len = max_model_len
        self.pending: collections.deque[_Seq] = collections.deque()
        self.prefilling: list[_Seq] = []  # admitted, prompt not yet all in the cache
        self.running: list[_Seq] = []  # decoding; running[i] sits in cache slot i
        self.slots: list[_Seq | None] = []
        self.by_id: dict[str, _Seq] = {}
        self.wake = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.stats = EngineStats()
        self.outbox: list[tuple] = []  # (loop, queue, output) until the step ends

    @property
    def model_id(self) -> str:
        return self.source.default_id

    # -- lifecycle -----------------------------------------------------------------------
    def _use_ggml(self) -> bool:
        """auto: ggml for a GGUF on a CPU when the library loads here; torch otherwise."""
        if self.step_kind == "torch":
            return False
        why_not = None
        if not self.source.gguf_file or self.source.random_preset:
            why_not = "the model is not a GGUF file"
        elif self.device != "cpu":
            why_not = f"device {self.device!r} (the ggml step runs on the CPU)"
        else:
            from . import ggml_step

            why_not = ggml_step.available()
        if why_not is None:
            return True
        if self.step_kind == "ggml":
            raise SystemExit(f"--step ggml: {why_not}")
        if self.source.gguf_file and not self.source.random_preset:
            log.warning("torch step: %s", why_not)
        return False

    def _load_ggml(self) -> None:
        import pathlib

        from .ggml_step import GgmlStep

        step = GgmlStep(
            pathlib.Path(self.source.folder, self.source.gguf_file),
            self.max_batch + 1,  # one slot more than the batch: room to swap two sequences
            kv_tokens=self.kv_tokens,
            kv_type=self.kv_type or "q8_0",
            threads=self.threads,
        )
        check_vocab(step, self.tokenizer)
        self.step = step
        self.int8 = False
        max_len = min(self.requested_len or step.n_ctx_train, step.n_ctx_train, self.kv_tokens)
        self._finish_load(max_len, step.n_vocab)

    def _finish_load(self, max_len: int, vocab_size: int) -> None:
        # The dialect of the xgrammar this process compiles with (an older one takes EBNF).
        self.info = EngineInfo(
            "torch",
            max_len,
            vocab_size,
            self.max_batch,
            engine_dialect(importlib.metadata.version("xgrammar")),
        )
        self.compiler = ConstraintCompiler(
            self.tokenizer, vocab_size, [self.tokenizer.eos_token_id]
        )
        self.slots = [None] * self.max_batch
        self.bitmask = xgr.allocate_token_bitmask(self.max_batch, vocab_size)
        self.probe = xgr.allocate_token_bitmask(1, vocab_size)  # _only_stop_left's row

    def load(self) -> None:
        t0 = time.perf_counter()
        use_ggml = self._use_ggml()
        if use_ggml:
            # Beside the ggml step torch only samples: a few small ops a step, which on its
            # OpenMP pool woke a sleeping thread that then took a core from the step's threads.
            # In-process, one stream, three alternated runs: ITL 11.3 -> 8.8 ms (README).
            self.torch_threads = 1
        else:  # torch starts a thread per core it sees, whatever the container's CPU quota
            self.torch_threads = self.threads or min(usable_cpus(), TORCH_DEFAULT_THREADS)
        torch.set_num_threads(self.torch_threads)  # the warm-up's, on this thread
        self.tokenizer = model_source.load_tokenizer(self.source)
        if use_ggml:
            self._load_ggml()
            with torch.inference_mode():
                self._warm_up()
            self._log_loaded("gguf", t0)
            return
        if self.kv_type:  # the torch step keeps its KV in the model's dtype: not enforced
            raise SystemExit(f"--kv-type {self.kv_type}: only the ggml step has a KV type")
        from transformers import AutoModelForCausalLM

        if self.source.random_preset:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(self.source.random_config(), dtype=self.dtype)
        else:
            model = model_source.load_model(self.source, self.dtype)
        model.to(self.device).eval()
        cfg = model.config
        max_len = min(
            self.requested_len or cfg.max_position_embeddings, cfg.max_position_embeddings
        )
        self._finish_load(max_len, cfg.vocab_size)
        why_not = llama_step.supports(cfg)
        with torch.inference_mode():
            # One slot more than the batch: room to swap two sequences' caches.
            if why_not is None:
                self.step = LlamaStep(model, self.max_batch + 1, max_len + 1, int8=self.int8)
            elif self.int8_required:
                raise SystemExit(f"--dtype int8 needs the Llama-family step: {why_not}")
            else:
                self.int8 = False
                log.warning(
                    "%s: %s; decoding one sequence per forward pass (transformers)",
                    self.source.default_id,
                    why_not,
                )
                self.step = HFStep(model, self.max_batch + 1, max_len + 1)
            self._warm_up()
        self._log_loaded("int8" if self.int8 else str(self.dtype).removeprefix("torch."), t0)

    def _log_loaded(self, dtype: str, t0: float) -> None:
        log.info(
            "loaded %s (%s, %s, %s) in %.1fs",
            self.source.default_id,
            dtype,
            self.device,
            type(self.step).__name__,
            time.perf_counter() - t0,
        )

    def _warm_up(self) -> None:
        """First calls of the kernels pay set-up costs: pay them here, not in a request."""
        for n in (8, 1):
            self.step.forward([], [Span(0, [0] * n, 0)])
        self.step.forward([Span(0, [0], 1)], [Span(1, [0] * 4, 0)])
        for slot in (0, 1):
            self.step.release(slot)

    async def start(self) -> None:
        if not hasattr(self, "step"):
            await asyncio.to_thread(self.load)
        self.loop = asyncio.get_running_loop()
        self.faulted = asyncio.Event()
        self.thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self.thread.start()

    async def wait_fault(self) -> BaseException:
        await self.faulted.wait()
        return self.fault

    async def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        if self.thread:
            await asyncio.to_thread(self.thread.join, 10)

    def active_requests(self) -> int:
        return len(self.by_id)

    def occupancy(self) -> EngineLoad:
        # Read from another thread without the lock: a scrape may be off by a step, no more.
        held = list(self.running) + list(self.prefilling)
        # The ggml step's sequences share one pool; the torch step reserves each slot's room.
        cells = self.step.kv_tokens or self.max_batch * (self.info.max_model_len + 1)
        return EngineLoad(
            running=len(held),
            waiting=len(self.pending),
            cache_used=sum(s.position for s in held) / cells,
        )

    # -- requests ------------------------------------------------------------------------
    async def submit(self, request: EngineRequest, sink) -> _Seq:
        """Check, compile and queue `request`; its outputs go to `sink.put_nowait` on this
        event loop, all of a step's outputs in one loop callback (the multiplexed stream
        builds one frame per step from them). The returned sequence's `timed_out` tells an
        "abort" finish that was a queue timeout."""
        check_request(request, self.info, self.by_id)
        matcher = await constraint_matcher(self.compiler, request)
        generator = None
        if request.seed is not None and request.temperature > 0:
            generator = torch.Generator().manual_seed(request.seed)
        room = self.info.max_model_len - len(request.prompt_ids)
        max_tokens = min(request.max_tokens, room) if request.max_tokens else room
        seq = _Seq(
            request,
            asyncio.get_running_loop(),
            sink,
            matcher,
            generator,
            frozenset(request.stop_ids),
            max_tokens,
            enqueued=time.monotonic(),
        )
        with self.wake:
            if self.fault is not None:  # nothing would run it: another replica may
                raise EngineBusy(f"the engine loop failed ({self.fault!r}); restarting")
            self.by_id[request.request_id] = seq
            self.pending.append(seq)
            self.wake.notify()
        return seq

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        return queued_outputs(self, request, self._notify)

    def _notify(self) -> None:
        with self.wake:
            self.wake.notify()

    async def abort(self, request_id: str) -> bool:
        seq = self.by_id.get(request_id)
        if seq is None:
            return False
        seq.aborted = True
        with self.wake:
            self.wake.notify()
        return True

    # -- the worker thread ---------------------------------------------------------------
    def _run(self) -> None:
        if self.torch_threads:
            # This thread's own count: torch gives a thread the process-wide count at its first
            # op (read here), and another engine loaded in this process may have changed that.
            torch.get_num_threads()
            torch.set_num_threads(self.torch_threads)
        try:
            with torch.inference_mode():
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
        except Exception as e:  # a fault here must not hang every stream: end them all
            log.exception("engine loop failed")
            with self.wake:  # later requests are refused, and the service exits (wait_fault)
                self.fault = e
                seqs = list(self.by_id.values())
                self.by_id.clear()
            for seq in seqs:
                self._emit(
                    seq, EngineOutput([], "abort", len(seq.request.prompt_ids), seq.completion)
                )
            self._flush()
            self.loop.call_soon_threadsafe(self.faulted.set)

    def _abort_all(self, why: Exception) -> None:
        """The ggml step's shared KV pool ran out mid-step: end what holds it (abort), keep
        serving. The pool is sized by --kv-tokens; the torch step reserves each slot's room."""
        log.error("%s: aborting %d requests", why, len(self.running) + len(self.prefilling))
        for s in self.running + self.prefilling:
            if s.finish is None:
                self._finish(s, "abort")

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
                    self._finish(seq, "abort")
        while self.pending and len(self.running) + len(self.prefilling) < self.max_batch:
            with self.wake:
                seq = self.pending.popleft()
            if seq.aborted:
                self._finish(seq, "abort")
                continue
            # What the grammar forces before the first free token prefills with the prompt,
            # and goes to the caller now, as a jump after a sampled token does: it is the
            # output whatever the forward computes (see _forced).
            forced, ends = self._forced(seq)
            if ends:  # the grammar allows one output: no slot, no forward, nothing reused
                self._finish(seq, "stop", forced)
                continue
            seq.slot = self.slots.index(None)
            self.slots[seq.slot] = seq
            seq.feed = seq.request.prompt_ids
            self._reuse(seq)
            if forced:
                seq.feed = seq.feed + forced
                self._emit(seq, EngineOutput(forced))
            self.prefilling.append(seq)

    def _reuse(self, seq: _Seq) -> None:
        """Start seq from the longest prefix of its prompt whose KV is already computed: in a
        running sequence's slot or in the prefix cache. The step's min_prefill tokens at least
        are left to prefill (the last one's logits give the first sample)."""
        if self.prefix_cache is None:
            return
        prompt = seq.request.prompt_ids
        self.stats.prefix_queries += len(prompt)
        best, source = 0, None
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
        if isinstance(source, _Seq):
            self.step.copy_prefix(source.slot, seq.slot, best)
        else:
            try:
                self.step.load(seq.slot, source.kv, best)
            except KVPoolFull:  # no room to put it back: prefill the whole prompt instead
                return
        seq.position = seq.cached = best
        self.stats.prefix_hits += best

    def _keep_prompt(self, seq: _Seq) -> None:
        """A finished sequence's prompt KV into the prefix cache (unless already there)."""
        cache, prompt = self.prefix_cache, seq.request.prompt_ids
        if cache is None or cache.budget <= 0 or seq.position < len(prompt):
            return
        if cache.covers(prompt):
            return
        saved, nbytes = self.step.save(seq.slot, len(prompt))
        cache.insert(list(prompt), saved, nbytes)

    def _forced(self, seq: _Seq) -> tuple[list[int], bool]:
        """Tokens the grammar admits in exactly one way from here (jump-forward), accepted
        into seq's matcher and counted as generated; at most all but one of the tokens seq
        has left, so a sampled token still fits. And whether the output ends with them: the
        grammar then admits nothing but a stop token, so no forward is needed for what
        follows. Before, a call's closing `}\n</tool_call>` prefilled its 6 tokens and two
        more steps sampled its `>` and the stop (in-process, the strict single-call tool
        workload: 16 streams 4.40 -> 5.49 req/s, one stream 265-284 -> 199-208 ms a call).

        The forced text is tokenized alone and its last token held back: the model then
        picks the token that ends the forced text, which may run on into the free text
        after it (a longer merge), so the ids stay what decoding token by token would
        give at the seam. Where nothing but a stop can follow there is no seam: the last
        token is taken too. Every id goes through the matcher like a sampled one."""
        room = seq.max_tokens - seq.completion
        if not self.jump_forward or seq.matcher is None or room <= 1:
            return [], False
        try:
            text = seq.matcher.find_jump_forward_string()
        except UnicodeDecodeError:
            # The forced bytes stop inside a character (a multi-byte marker such as DeepSeek's
            # <｜tool▁sep｜> on a vocabulary without it): xgrammar cannot hand them over as text,
            # and raising here ended the engine loop, leaving queued requests hanging. No jump.
            return [], False
        if not text:
            # Only where the grammar has just become complete: in free text (tool_choice auto)
            # it is complete at every token, and a probe each time cost 86 µs a token.
            was, seq.completed = seq.completed, seq.matcher.is_completed()
            return [], seq.completed and not was and self._only_stop_left(seq)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        taken = []
        for t in ids[:-1][: room - 1]:
            if t in seq.stop_ids or not seq.matcher.accept_token(t):
                break
            taken.append(t)
        ends = False
        # The whole text fits with a token to spare (decoded token by token, its last token
        # would leave room for the stop, not end at max_tokens).
        if len(taken) == len(ids) - 1 and len(ids) < room and ids[-1] not in seq.stop_ids:
            if seq.matcher.accept_token(ids[-1]):
                if self._only_stop_left(seq):
                    taken.append(ids[-1])
                    ends = True
                else:
                    seq.matcher.rollback(1)
        seq.completed = seq.matcher.is_completed()
        seq.completion += len(taken)
        self.stats.tokens += len(taken)
        return taken, ends

    def _only_stop_left(self, seq: _Seq) -> bool:
        """seq's grammar is complete and admits no token but a stop from here (a strict call
        with parallel_tool_calls false after its closing tag; a JSON response after its last
        brace): the stop a forward would sample is the only one it could."""
        if not seq.matcher.is_completed():
            return False
        t0 = time.perf_counter()
        seq.matcher.fill_next_token_bitmask(self.probe, 0)
        bits = self.probe.numpy().view(np.uint32)[0]
        for t in seq.stop_ids:
            if t < bits.size * 32:
                bits[t >> 5] &= ~np.uint32(1 << (t & 31))
        self.stats.mask_s += time.perf_counter() - t0
        return not bits.any()

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

    def _iterate(self) -> None:
        decode = [Span(s.slot, [s.last_token], s.position) for s in self.running]
        # A sequence with forced tokens runs them as a chunk right after its decode row (the
        # chunk attends to that row's key, written first in each layer); its next token is
        # sampled from the chunk's last row.
        jumping = [s for s in self.running if s.jump]
        jumps = [Span(s.slot, s.jump, s.position + 1) for s in jumping]
        prefill = self._prefill_spans()
        t0 = time.perf_counter()
        logits = self.step.forward(decode, jumps + prefill)
        self.stats.forward_s += time.perf_counter() - t0
        self.stats.steps += 1
        for s in self.running:
            s.position += 1
        jump_row = {}
        for i, s in enumerate(jumping):
            s.position += len(s.jump)
            s.jump = None
            jump_row[s.slot] = len(decode) + i
        # Sequences whose prompt is now whole get their first token sampled with the rest.
        ready = list(self.running)
        rows = [jump_row.get(s.slot, i) for i, s in enumerate(self.running)]
        first = len(decode) + len(jumps)
        for i, span in enumerate(prefill):
            seq = self.slots[span.slot]
            seq.position += len(span.tokens)
            if seq.position == len(seq.feed):
                ready.append(seq)
                rows.append(first + i)
        if not ready:
            return
        if len(rows) != logits.shape[0]:
            logits = logits[rows]
        for seq, token in zip(ready, self._sample(ready, logits)):
            if seq in self.prefilling:
                self.prefilling.remove(seq)
                if self._accept(seq, token):
                    self._start_decoding(seq)
                else:
                    self._free(seq)
            else:
                self._accept(seq, token)

    def _sample(self, seqs: list[_Seq], logits: torch.Tensor) -> list[int]:
        constrained = [i for i, s in enumerate(seqs) if s.matcher is not None]
        if constrained:
            t0 = time.perf_counter()
            for i in constrained:
                seqs[i].matcher.fill_next_token_bitmask(self.bitmask, i)
            xgr.apply_token_bitmask_inplace(
                logits, self.bitmask[: len(seqs)].to(logits.device), indices=constrained
            )
            self.stats.mask_s += time.perf_counter() - t0
        if logits.device.type == "cpu" and logits.dtype == torch.float32:
            # numpy's argmax, the same first-maximum rule as torch's: a 49,152-token row in
            # 9-15 µs against torch's ~100 (16 rows: ~100 µs against ~1,250).
            greedy = logits.detach().numpy().argmax(axis=-1).tolist()
        else:
            greedy = logits.argmax(dim=-1).tolist()
        tokens = []
        for i, s in enumerate(seqs):
            temp = s.request.temperature
            if temp <= 0:
                tokens.append(greedy[i])
                continue
            probs = torch.softmax(logits[i].cpu() / temp, dim=-1)  # seeded generators are CPU
            top_p = s.request.top_p
            if 0 < top_p < 1:
                sorted_p, order = probs.sort(descending=True)
                cut = sorted_p.cumsum(0) - sorted_p > top_p
                sorted_p[cut] = 0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            tokens.append(int(torch.multinomial(probs, 1, generator=s.generator)))
        return tokens

    def _accept(self, seq: _Seq, token: int) -> bool:
        """Record a sampled token; False when the sequence has finished."""
        if seq.aborted:
            self._finish(seq, "abort")
            return False
        if seq.matcher is not None and not seq.matcher.accept_token(token):
            log.error("grammar refused its own masked token %d", token)
            self._finish(seq, "abort")
            return False
        if token in seq.stop_ids or (seq.matcher is not None and seq.matcher.is_terminated()):
            self._finish(seq, "stop")
            return False
        seq.last_token = token
        seq.completion += 1
        self.stats.tokens += 1
        done = seq.completion >= seq.max_tokens
        if done:
            self._finish(seq, "length", [token])
            return False
        forced, ends = self._forced(seq)
        if ends:
            self._finish(seq, "stop", [token] + forced)
            return False
        if forced:
            seq.jump = forced
        self._emit(seq, EngineOutput([token] + forced))
        return True

    def _emit(self, seq: _Seq, out: EngineOutput) -> None:
        self.outbox.append((seq.loop, seq.queue, out))

    def _flush(self) -> None:
        """Hand this iteration's outputs to their event loops: one wake-up per loop per step,
        not one per token."""
        if not self.outbox:
            return
        by_loop: dict = {}
        for loop, queue, out in self.outbox:
            by_loop.setdefault(loop, []).append((queue, out))
        self.outbox = []
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_deliver, items)

    def _finish(self, seq: _Seq, reason: str, last: list[int] | None = None) -> None:
        seq.finish = reason
        self.stats.aborts += reason == "abort" and not seq.timed_out
        self._emit(
            seq,
            EngineOutput(
                last or [], reason, len(seq.request.prompt_ids), seq.completion, seq.cached
            ),
        )
        with self.wake:
            self.by_id.pop(seq.request.request_id, None)

    # -- cache slots: decoding sequences sit in slots 0..n-1, so one view covers them ------
    def _relocate(self, seq: _Seq, slot: int) -> None:
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

    def _start_decoding(self, seq: _Seq) -> None:
        self._relocate(seq, len(self.running))
        self.running.append(seq)

    def _free(self, seq: _Seq) -> None:
        if 0 <= seq.slot < len(self.slots) and self.slots[seq.slot] is seq:
            self._keep_prompt(seq)
            self.step.release(seq.slot)
            self.slots[seq.slot] = None
        seq.slot = -1

    def _drop_finished(self) -> None:
        for s in self.running + self.prefilling:
            if s.aborted and s.finish is None:
                self._finish(s, "abort")
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
