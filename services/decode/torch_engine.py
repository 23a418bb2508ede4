"""The torch engine: transformers on CPU (or GPU), continuous batching, xgrammar masks.

One worker thread owns the model. Each step it admits waiting requests (prefilling one at a
time while others are running, so running streams stall for one prefill at most), then decodes
one token for every running sequence in a single batched forward pass. Each sequence carries
its own xgrammar matcher; their masks are applied to its row of logits.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable

import torch
import xgrammar as xgr

from toolwire import model_source
from toolwire.grammar import ConstraintCompiler

from .batch_cache import BatchCache
from .engine import Engine, EngineInfo, EngineOutput, EngineRequest, EngineRequestError

log = logging.getLogger("toolwire.decode")


def pick_dtype(name: str) -> torch.dtype:
    """auto: bf16 where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32."""
    if name != "auto":
        return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
                "float32": torch.float32, "fp16": torch.float16}[name]
    if torch.cuda.is_available():
        return torch.bfloat16
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        flags = ""
    # Measured on the embedded model, 2 cores: bf16 matches fp32 at one stream and batches
    # 1.5x better at 16 (bench/), where the CPU does bf16 natively.
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else torch.float32


@dataclass
class _Seq:
    request: EngineRequest
    emit: Callable[[EngineOutput], None]
    matcher: xgr.GrammarMatcher | None
    generator: torch.Generator | None
    stop_ids: frozenset
    max_tokens: int
    last_token: int = 0
    position: int = 0  # tokens in the cache
    completion: int = 0
    aborted: bool = False
    finish: str | None = None


@dataclass
class StepStats:
    """Where decode time goes, for the bench: forward pass vs grammar masks."""
    steps: int = 0
    forward_s: float = 0.0
    mask_s: float = 0.0
    tokens: int = 0


class TorchEngine(Engine):
    def __init__(self, model: str = model_source.EMBEDDED, dtype: str = "auto",
                 max_batch: int = 32, max_model_len: int | None = None, threads: int | None = None,
                 device: str = "cpu"):
        self.source = model_source.resolve(model)
        self.dtype = pick_dtype(dtype)
        self.device = device
        self.max_batch = max_batch
        self.threads = threads
        self.requested_len = max_model_len
        self.pending: collections.deque[_Seq] = collections.deque()
        self.running: list[_Seq] = []
        self.by_id: dict[str, _Seq] = {}
        self.wake = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.stats = StepStats()

    # -- lifecycle -----------------------------------------------------------------------
    def load(self) -> None:
        from transformers import AutoModelForCausalLM

        if self.threads:
            torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        self.tokenizer = model_source.load_tokenizer(self.source)
        if self.source.random_preset:
            torch.manual_seed(0)
            self.model = AutoModelForCausalLM.from_config(self.source.random_config(),
                                                          dtype=self.dtype)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(
                self.source.folder, dtype=self.dtype, **self.source.from_pretrained_kwargs())
        self.model.to(self.device).eval()
        cfg = self.model.config
        max_len = min(self.requested_len or cfg.max_position_embeddings, cfg.max_position_embeddings)
        self.info = EngineInfo("torch", max_len, cfg.vocab_size, self.max_batch)
        self.compiler = ConstraintCompiler(self.tokenizer, cfg.vocab_size,
                                           [self.tokenizer.eos_token_id])
        self.cache = BatchCache(cfg.num_hidden_layers, self.max_batch, max_len + 1)
        self.bitmask = xgr.allocate_token_bitmask(self.max_batch, cfg.vocab_size)
        log.info("loaded %s (%s, %s) in %.1fs", self.source.default_id, self.dtype, self.device,
                 time.perf_counter() - t0)

    async def start(self) -> None:
        if not hasattr(self, "model"):
            await asyncio.to_thread(self.load)
        self.thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self.thread.start()

    async def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        if self.thread:
            await asyncio.to_thread(self.thread.join, 10)

    def active_requests(self) -> int:
        return len(self.by_id)

    # -- requests ------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        n = len(request.prompt_ids)
        if n == 0:
            raise EngineRequestError("the prompt is empty", "prompt_token_ids")
        if n >= self.info.max_model_len:
            raise EngineRequestError(f"the prompt has {n} tokens; this model's context is "
                                     f"{self.info.max_model_len}", "messages")
        if any(t >= self.info.vocab_size for t in request.prompt_ids):
            raise EngineRequestError("a prompt token id is outside the vocabulary", "prompt_token_ids")
        if request.request_id in self.by_id:
            raise EngineRequestError(f"request id {request.request_id!r} is already running",
                                     "request_id")
        matcher = None
        if request.constraint:
            try:
                grammar = await asyncio.to_thread(self.compiler.compile, *request.constraint)
            except Exception as e:
                raise EngineRequestError(f"invalid constraint: {e}", "constraint")
            matcher = xgr.GrammarMatcher(grammar, override_stop_tokens=request.stop_ids or None)
        generator = None
        if request.seed is not None and request.temperature > 0:
            generator = torch.Generator().manual_seed(request.seed)
        room = self.info.max_model_len - n
        max_tokens = min(request.max_tokens, room) if request.max_tokens else room
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[EngineOutput] = asyncio.Queue()
        seq = _Seq(request, lambda out: loop.call_soon_threadsafe(queue.put_nowait, out),
                   matcher, generator, frozenset(request.stop_ids), max_tokens)
        with self.wake:
            self.by_id[request.request_id] = seq
            self.pending.append(seq)
            self.wake.notify()
        finished = False
        try:
            while True:
                out = await queue.get()
                # Coalesce what queued up while the consumer was busy.
                while not queue.empty() and out.finish_reason is None:
                    nxt = queue.get_nowait()
                    out = EngineOutput(out.token_ids + nxt.token_ids, nxt.finish_reason,
                                       nxt.prompt_tokens, nxt.completion_tokens)
                finished = out.finish_reason is not None
                yield out
                if finished:
                    return
        finally:
            if not finished:
                seq.aborted = True  # the caller went away: free the slot
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
        try:
            with torch.inference_mode():
                while True:
                    with self.wake:
                        while not self.stopping and not self.pending and not self.running:
                            self.wake.wait()
                        if self.stopping:
                            break
                    self._drop_finished()
                    self._admit()
                    if self.running:
                        self._step()
                    self._drop_finished()
        except Exception:  # a fault here must not hang every stream: end them all
            log.exception("engine loop failed")
            for seq in list(self.by_id.values()):
                seq.emit(EngineOutput([], "abort", len(seq.request.prompt_ids), seq.completion))
            self.by_id.clear()
            raise

    def _admit(self) -> None:
        while self.pending and len(self.running) < self.max_batch:
            with self.wake:
                seq = self.pending.popleft()
            if seq.aborted:
                self._finish(seq, "abort")
                continue
            self._prefill(seq)
            if self.running and any(s is not seq for s in self.running):
                break  # one prefill per step while others are decoding

    def _prefill(self, seq: _Seq) -> None:
        from transformers import DynamicCache

        ids = torch.tensor([seq.request.prompt_ids], device=self.device)
        cache = DynamicCache()
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        seq.position = ids.shape[1]
        token = self._sample([seq], out.logits[:, -1, :].float())[0]
        if self._accept(seq, token):
            self.cache.join(cache)
            self.running.append(seq)

    def _step(self) -> None:
        seqs = self.running
        t0 = time.perf_counter()
        ids = torch.tensor([[s.last_token] for s in seqs], device=self.device)
        positions = torch.tensor([[s.position] for s in seqs], device=self.device)
        mask = self.cache.attention_mask().to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         past_key_values=self.cache.cache, use_cache=True, logits_to_keep=1)
        self.cache.length += 1
        logits = out.logits[:, -1, :].float()
        self.stats.forward_s += time.perf_counter() - t0
        self.stats.steps += 1
        for s in seqs:
            s.position += 1
        for s, token in zip(seqs, self._sample(seqs, logits)):
            self._accept(s, token)

    def _sample(self, seqs: list[_Seq], logits: torch.Tensor) -> list[int]:
        constrained = [i for i, s in enumerate(seqs) if s.matcher is not None]
        if constrained:
            t0 = time.perf_counter()
            for i in constrained:
                seqs[i].matcher.fill_next_token_bitmask(self.bitmask, i)
            xgr.apply_token_bitmask_inplace(logits, self.bitmask[:len(seqs)].to(logits.device),
                                            indices=constrained)
            self.stats.mask_s += time.perf_counter() - t0
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
        seq.emit(EngineOutput([token]))
        return True

    def _finish(self, seq: _Seq, reason: str, last: list[int] | None = None) -> None:
        seq.finish = reason
        seq.emit(EngineOutput(last or [], reason, len(seq.request.prompt_ids), seq.completion))
        with self.wake:
            self.by_id.pop(seq.request.request_id, None)

    def _drop_finished(self) -> None:
        for s in self.running:
            if s.aborted and s.finish is None:
                self._finish(s, "abort")
        keep = [i for i, s in enumerate(self.running) if s.finish is None]
        if len(keep) != len(self.running):
            self.cache.keep(keep)
            self.running = [self.running[i] for i in keep]
