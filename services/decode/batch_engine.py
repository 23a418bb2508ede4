"""The batch engine: the decode service's own engine, continuous batching over one step.

It loads the model, picks the step that runs it (llama.cpp's kernels for a GGUF on a CPU,
plain torch for a Llama-family model elsewhere, transformers' forward for anything else:
services/decode/steps/), and hands requests to the scheduler (scheduler.py), which runs on a
thread of its own. Each sequence carries its own xgrammar matcher; the scheduler applies its
mask to its row of logits (sampling.py) and skips forced text (jump_forward.py).

`--engine batch` names it; `--engine torch`, its name before the steps were split out, is
kept as an alias.

torch is imported only on the torch step's paths: the ggml step's process runs without it
(services/decode/step_choice.py), and its logits are sampled in numpy.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.constraints.dialects import engine_dialect
from toolwire.runtime import model_source
from toolwire.runtime.cpus import explain, usable_cpus

from . import sampling
from .drafts import MAX_DRAFT
from .engine import (
    Engine,
    EngineInfo,
    EngineLoad,
    EngineOutput,
    EngineRequest,
    EngineStats,
    check_engine_request,
    constraint_matcher,
    queued_outputs,
)
from .gguf_tokenizer import GgufTokenizer
from .prefix_cache import PrefixCache
from .scheduler import Scheduler, Sequence
from .step_choice import KINDS as STEP_KINDS
from .step_choice import use_ggml
from .step_threads import POLICIES, StepThreads
from .steps import Span, Step
from .steps.ggml import GgmlStep

if TYPE_CHECKING:
    import torch

    from toolwire.constraints.xgrammar_core import TokenizerInfo

log = logging.getLogger("toolwire.decode")


@functools.cache
def torch_default_threads() -> int:
    """torch's own count (a thread per core it sees), read once, before any torch step here
    changes it: a process may host several engines (tests, benches)."""
    import torch

    return torch.get_num_threads()


def pick_dtype(name: str) -> torch.dtype:
    """auto: bf16 where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32."""
    import torch

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


class BatchEngine(Engine):
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
        thread_policy: str = "adaptive",
        speculation: str = "auto",  # auto | ngram | off
    ):
        self.source = model_source.resolve(model)
        if self.source.null:
            raise SystemExit("--model null runs on the null engine (null_engine.py)")
        # int8: weight-only int8 matmuls, fp32 everywhere else (TorchLlamaStep only). `auto` on a
        # CPU takes it where the step supports the model: decode there is bound by the bytes
        # of weights read per step (bench/: 2.3x the tokens/s of fp32 at one stream).
        self.int8 = dtype == "int8" or (dtype == "auto" and device == "cpu")
        self.int8_required = dtype == "int8"
        self.dtype_name = "fp32" if self.int8 else dtype  # pick_dtype()'d by the torch step
        self.device = device
        self.max_batch = max_batch
        self.threads = threads
        # torch's threads in the torch step (set by load()); None: the step runs no torch
        self.torch_threads: int | None = None
        if thread_policy not in POLICIES:
            raise SystemExit(f"--thread-policy {thread_policy!r}: {' or '.join(POLICIES)}")
        self.thread_policy = thread_policy
        if speculation not in ("auto", "ngram", "off"):
            raise SystemExit(f"--speculation {speculation!r}: auto, ngram or off")
        self.speculation = speculation
        self.prefill_chunk = prefill_chunk
        self.queue_timeout = queue_timeout
        self.prefix_cache_mb = prefix_cache_mb
        self.prefix_reuse = prefix_reuse
        self.jump_forward = jump_forward
        if step not in STEP_KINDS:
            raise SystemExit(f"--step {step!r}: auto, torch or ggml")
        self.step_kind = step
        self.kv_tokens = kv_tokens
        self.kv_type = kv_type
        self.requested_len = max_model_len
        self.thread: threading.Thread | None = None
        self.stats: EngineStats = EngineStats()
        self.step: Step  # set by load()
        self.scheduler: Scheduler  # built by load(), once the step is known

    @property
    def model_id(self) -> str:
        return self.source.default_id

    # -- lifecycle -----------------------------------------------------------------------
    def _load_ggml(self) -> None:
        import pathlib

        assert self.source.gguf_file is not None, "the ggml step runs a GGUF"
        step = GgmlStep(
            pathlib.Path(self.source.folder, self.source.gguf_file),
            self.max_batch + 1,  # one slot more than the batch: room to swap two sequences
            kv_tokens=self.kv_tokens,
            kv_type=self.kv_type or "q8_0",
            threads=self.threads,
        )
        self.tokenizer = tokenizer = GgufTokenizer(step, self.source)
        self.step = step
        self.int8 = False
        max_len = min(self.requested_len or step.n_ctx_train, step.n_ctx_train, self.kv_tokens)
        self._finish_load(max_len, step.n_vocab, tokenizer.info)
        self._schedule(step.n_vocab)

    def _finish_load(
        self, max_len: int, vocab_size: int, info: TokenizerInfo | None = None
    ) -> None:
        """`info`: the grammar's vocabulary where the step has its own (the GGUF's); else
        read from the tokenizer."""
        # The dialect of the xgrammar this process compiles with (an older one takes EBNF).
        self.info = EngineInfo(
            "batch",
            max_len,
            vocab_size,
            self.max_batch,
            engine_dialect(importlib.metadata.version("xgrammar")),
        )
        self.compiler = ConstraintCompiler(
            self.tokenizer, vocab_size, [self.tokenizer.eos_token_id], info=info
        )

    def _step_threads(self) -> tuple[StepThreads, Callable[[int], None]]:
        """The step's thread policy and how to change its count: the ggml step's own threads,
        else torch's OpenMP pool (set on the scheduler's thread, which runs every forward)."""
        if isinstance(self.step, GgmlStep):
            return StepThreads(self.step.threads, self.thread_policy), self.step.set_threads
        import torch

        return StepThreads(self.torch_threads or 1, self.thread_policy), torch.set_num_threads

    def _schedule(self, vocab_size: int) -> None:
        """The scheduler over the loaded step."""
        cache = PrefixCache(self.prefix_cache_mb << 20) if self.prefix_reuse else None
        if self.speculation == "ngram" and not self.step.verifies_drafts:
            raise SystemExit(
                f"--speculation ngram: {type(self.step).__name__} returns one row a sequence "
                "and cannot verify drafts (the ggml and Llama torch steps do); auto or off"
            )
        policy, set_threads = self._step_threads()
        self.scheduler = Scheduler(
            self.step,
            self.tokenizer,
            vocab_size,
            self.max_batch,
            self.prefill_chunk,
            self.queue_timeout,
            cache,
            self.jump_forward,
            self.stats,
            policy,
            set_threads,
            speculate=self.speculation != "off",
        )

    def load(self) -> None:
        t0 = time.perf_counter()
        if use_ggml(self.source, self.step_kind, self.device):
            # No torch here: the step, its sampling and its thread policy are numpy and
            # llama.cpp (in a test session torch may be loaded; this engine leaves it alone),
            # and the tokenizer is the GGUF's own, llama.cpp's (gguf_tokenizer.py).
            self._load_ggml()
            self._warm_up()
            if self.scheduler.speculate:
                self.scheduler.measure_cost()
            self._log_loaded("gguf", t0)
            return
        self._load_torch(t0)

    def _load_torch(self, t0: float) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from .steps import torch_llama
        from .steps.hf import TransformersStep
        from .steps.torch_llama import TorchLlamaStep

        # torch starts a thread per core it sees, whatever the container's CPU quota
        self.torch_threads = self.threads or min(usable_cpus(), torch_default_threads())
        torch.set_num_threads(self.torch_threads)  # the warm-up's, on this thread
        self.tokenizer = model_source.load_tokenizer(self.source)
        if self.kv_type:  # the torch step keeps its KV in the model's dtype: not enforced
            raise SystemExit(f"--kv-type {self.kv_type}: only the ggml step has a KV type")
        dtype = pick_dtype(self.dtype_name)
        if self.source.random_preset:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(self.source.random_config(), dtype=dtype)
        else:
            model = model_source.load_model(self.source, dtype)
        model.to(self.device).eval()
        cfg = model.config
        max_len = min(
            self.requested_len or cfg.max_position_embeddings, cfg.max_position_embeddings
        )
        self._finish_load(max_len, cfg.vocab_size)
        why_not = torch_llama.supports(cfg)
        with torch.inference_mode():
            # One slot more than the batch: room to swap two sequences' caches.
            if why_not is None:
                self.step = TorchLlamaStep(model, self.max_batch + 1, max_len + 1, int8=self.int8)
            elif self.int8_required:
                raise SystemExit(f"--dtype int8 needs the Llama-family step: {why_not}")
            else:
                self.int8 = False
                log.warning(
                    "%s: %s; decoding one sequence per forward pass (transformers)",
                    self.source.default_id,
                    why_not,
                )
                self.step = TransformersStep(model, self.max_batch + 1, max_len + 1)
            self._schedule(cfg.vocab_size)
            self._warm_up()
            if self.scheduler.speculate:
                self.scheduler.measure_cost()
        self._log_loaded("int8" if self.int8 else str(dtype).removeprefix("torch."), t0)

    def describe(self) -> str:
        return f"batch engine, {type(self.step).__name__} ({self.step.library})"

    def _log_loaded(self, dtype: str, t0: float) -> None:
        log.info(
            "loaded %s (%s, %s, %s) in %.1fs",
            self.source.default_id,
            dtype,
            self.device,
            type(self.step).__name__,
            time.perf_counter() - t0,
        )
        cost = self.scheduler.cost
        if cost is not None:
            log.info(
                "speculation: prompt-lookup drafts of up to %d tokens where they pay (a forward "
                "here: %.1f ms for one position, %.1f ms more a position beyond; "
                "--speculation off to stop)",
                MAX_DRAFT,
                cost.one * 1e3,
                cost.per_position * 1e3,
            )
        elif self.speculation == "auto":
            log.info(
                "speculation: off (%s verifies one position a forward)", type(self.step).__name__
            )
        policy = self.scheduler.threads
        if policy is None:
            return
        # The ggml step's ceiling is --threads or usable_cpus(); the torch step's may instead be
        # torch's own count (torch_default_threads()), when that is smaller.
        if isinstance(self.step, GgmlStep) or self.threads or policy.ceiling == usable_cpus():
            why = explain(self.threads)
        else:
            why = f"{policy.ceiling} (torch's threads)"
        if policy.adaptive:
            how = "adaptive: fewer while other processes take the CPUs (--thread-policy)"
        else:
            how = "fixed" if policy.policy == "fixed" else "one CPU"
        log.info("step threads: at most %s; %s", why, how)

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
        self.thread = threading.Thread(target=self._run, name="batch-engine", daemon=True)
        self.thread.start()

    async def wait_fault(self) -> BaseException:
        await self.faulted.wait()
        fault = self.fault
        assert fault is not None, "faulted is set after the scheduler's fault"
        return fault

    async def stop(self) -> None:
        self.scheduler.stop()
        if self.thread:
            await asyncio.to_thread(self.thread.join, 10)

    @property
    def fault(self) -> BaseException | None:
        return self.scheduler.fault if hasattr(self, "scheduler") else None

    def active_requests(self) -> int:
        return len(self.scheduler.by_id)

    def occupancy(self) -> EngineLoad:
        # Read from another thread without the lock: a scrape may be off by a step, no more.
        s = self.scheduler
        held = list(s.running) + list(s.prefilling)
        # The ggml step's sequences share one pool; the torch step reserves each slot's room.
        cells = self.step.kv_tokens or self.max_batch * (self.info.max_model_len + 1)
        return EngineLoad(
            running=len(held),
            waiting=len(s.pending),
            cache_used=sum(q.position for q in held) / cells,
        )

    # -- requests ------------------------------------------------------------------------
    async def submit(self, request: EngineRequest, sink) -> Sequence:
        """Check, compile and queue `request`; its outputs go to `sink.put_nowait` on this
        event loop, all of a step's outputs in one loop callback (the multiplexed stream
        builds one frame per step from them). The returned sequence's `timed_out` tells an
        "abort" finish that was a queue timeout."""
        check_engine_request(request, self.info, self.scheduler.by_id)
        matcher = await constraint_matcher(self.compiler, request)
        generator = sampling.generator(request.seed, request.temperature, self.step.uses_torch)
        room = self.info.max_model_len - len(request.prompt_ids)
        max_tokens = min(request.max_tokens, room) if request.max_tokens else room
        seq = Sequence(
            request,
            asyncio.get_running_loop(),
            sink,
            matcher,
            generator,
            frozenset(request.stop_ids),
            max_tokens,
            enqueued=time.monotonic(),
        )
        self.scheduler.enqueue(seq)
        return seq

    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineOutput, None]:
        return queued_outputs(self, request, self.scheduler.notify)

    async def abort(self, request_id: str) -> bool:
        return self.scheduler.abort(request_id)

    def _run(self) -> None:
        """The scheduler's thread."""
        if self.torch_threads:
            import torch

            # This thread's own count: torch gives a thread the process-wide count at its first
            # op (read here), and another engine loaded in this process may have changed that.
            torch.get_num_threads()
            torch.set_num_threads(self.torch_threads)
        self.scheduler.run(lambda: self.loop.call_soon_threadsafe(self.faulted.set))
