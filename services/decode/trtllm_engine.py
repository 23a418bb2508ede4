"""The TensorRT-LLM engine: tensorrt_llm's LLM API (PyTorch backend) behind the engine contract.

Imported only when `--engine trtllm` is chosen; install with `pip install toolwire[trtllm]` or
use the decode image in k8s/images/. Token ids go in and come out (detokenization is the
extractor's job); constraints go to TensorRT-LLM's own xgrammar guided decoding.

Not run on this project's CI machines: they have no GPU and TensorRT-LLM cannot be installed
there. The engine contract suite (tests/engine_contract) runs against it wherever it imports.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator
from typing import Any

from toolwire.constraints.dialects import EBNF
from toolwire.constraints.kinds import Constraint, Kind
from toolwire.vocabulary import FinishReason

from .config import DecodeConfig
from .drafts import MAX_DRAFT, NGRAMS
from .engine import Engine, EngineInfo, EngineOutput, EngineRequest, EngineRequestError

log = logging.getLogger("toolwire.decode.trtllm")


def _import():
    try:
        import tensorrt_llm
        from tensorrt_llm import LLM, SamplingParams
        from tensorrt_llm.llmapi import GuidedDecodingParams, KvCacheConfig
    except ImportError as e:
        raise SystemExit(
            "--engine trtllm needs TensorRT-LLM, which is not installed here "
            f"({e}). Install toolwire[trtllm] on a machine with an NVIDIA GPU, or use the "
            "decode image built from k8s/images/decode-trtllm.Dockerfile."
        ) from None
    return tensorrt_llm, LLM, SamplingParams, GuidedDecodingParams, KvCacheConfig


def ngram_config(version: str):
    """TensorRT-LLM's own prompt-lookup drafter configured as the batch engine's is
    (services/decode/drafts.py): up to MAX_DRAFT tokens after a match of the last NGRAMS[0]
    tokens, in the request's own prompt and output (a pool per request), newest match
    first. Its PyTorch backend verifies the drafts under the guided decoder
    (tensorrt_llm/_torch/speculative/interface.py: an n-gram drafter supports it), rolling
    the grammar back for what is rejected; the drafts themselves are not cut by the grammar
    as ours are."""
    try:
        from tensorrt_llm.llmapi import NGramDecodingConfig
    except ImportError:
        raise SystemExit(
            f"--speculation ngram: TensorRT-LLM {version} has no NGramDecodingConfig "
            "(tensorrt_llm.llmapi); --speculation off"
        ) from None
    return NGramDecodingConfig(
        max_draft_len=MAX_DRAFT,
        max_matching_ngram_size=NGRAMS[0],
        is_keep_all=True,
        is_use_oldest=False,
        is_public_pool=False,
    )


def guided_decoding(params_cls, constraint: Constraint | None):
    """The request's constraint as GuidedDecodingParams (None when unconstrained).

    Only grammars (the EBNF dialect, which the template builds with toolwire's own options)
    and regexes: TensorRT-LLM would compile a JSON schema with xgrammar's defaults (strict,
    any whitespace; its grammar_matcher.py calls compile_json_schema(guide)), unlike the torch
    engine, and its xgrammar 0.1.25 reads toolwire's structural tags differently or not at all."""
    if constraint is None:
        return None
    if constraint.kind is Kind.EBNF:
        return params_cls(grammar=constraint.text)
    if constraint.kind is Kind.REGEX:
        return params_cls(regex=constraint.text)
    raise EngineRequestError(
        f"the trtllm engine takes constraints as grammars (dialect {EBNF}), not "
        f"{constraint.kind}: "
        "build them with the template service, passing the engine's constraint_dialect",
        "constraint",
    )


class TrtllmEngine(Engine):
    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        max_batch: int = 64,
        kv_cache_fraction: float = 0.85,
        max_model_len: int | None = None,
        speculation: str = "auto",
    ):
        self.model_path = model
        # auto is off here: TensorRT-LLM's n-gram drafter has not been measured on a GPU by
        # us; ngram passes it through (ngram_config).
        self.speculation = speculation
        self.tp = tensor_parallel_size
        self.max_batch = max_batch
        self.kv_fraction = kv_cache_fraction
        self.max_model_len = max_model_len
        self.running: dict[str, _Running] = {}
        self.llm: Any = None  # tensorrt_llm.LLM once started (the trtllm extra, untyped)

    @property
    def model_id(self) -> str:
        return self.model_path  # the checkpoint folder, as given

    @classmethod
    def from_config(cls, args: DecodeConfig) -> TrtllmEngine:
        if args.model in ("embedded", "null") or args.model.startswith("random:"):
            raise SystemExit(
                "--engine trtllm needs a Hugging Face checkpoint folder as --model "
                "(TensorRT-LLM's PyTorch backend loads Hugging Face checkpoints, "
                "not prebuilt engine folders); the embedded GGUF, random: presets "
                "and null are for the batch engine"
            )
        return cls(
            args.model,
            args.tensor_parallel_size,
            args.max_batch,
            args.kv_cache_fraction,
            args.max_model_len,
            args.speculation,
        )

    async def start(self) -> None:
        trtllm, LLM, self._SamplingParams, self._Guided, KvCacheConfig = _import()
        kwargs = dict(
            model=self.model_path,
            backend="pytorch",
            tensor_parallel_size=self.tp,
            max_batch_size=self.max_batch,
            # Block reuse (prefix caching) is TensorRT-LLM's default; kept on explicitly.
            kv_cache_config=KvCacheConfig(
                free_gpu_memory_fraction=self.kv_fraction, enable_block_reuse=True
            ),
            # Set explicitly: without a backend TensorRT-LLM ignores constraints.
            guided_decoding_backend="xgrammar",
        )
        if self.speculation == "ngram":
            kwargs["speculative_config"] = ngram_config(trtllm.__version__)
        max_len, vocab = model_limits(self.model_path, self.max_model_len)
        kwargs["max_seq_len"] = max_len  # left None, TensorRT-LLM reports no length to us
        self.llm = await asyncio.to_thread(LLM, **kwargs)
        self.info = EngineInfo("trtllm", max_len, vocab, self.max_batch, EBNF)
        log.info(
            "TensorRT-LLM %s loaded %s (tp=%d, speculation: %s)",
            trtllm.__version__,
            self.model_path,
            self.tp,
            "its n-gram drafter" if self.speculation == "ngram" else "off",
        )

    async def stop(self) -> None:
        if self.llm is not None:
            await asyncio.to_thread(self.llm.shutdown)

    def active_requests(self) -> int:
        return len(self.running)

    def _params(self, request: EngineRequest):
        if request.seed is not None:
            # TensorRT-LLM 1.2's default TorchSampler draws from one generator for the whole
            # batch: a per-request seed would be silently ignored, so it is refused.
            raise EngineRequestError(
                "seed is not supported by the trtllm engine (TensorRT-LLM's "
                "sampler ignores per-request seeds)",
                "seed",
            )
        return self._SamplingParams(
            max_tokens=request.max_tokens or None,
            temperature=request.temperature if request.temperature > 0 else None,
            top_k=1 if request.temperature <= 0 else None,
            top_p=request.top_p if 0 < request.top_p < 1 else None,
            seed=request.seed,
            stop_token_ids=list(request.stop_ids) or None,
            detokenize=False,
            guided_decoding=guided_decoding(self._Guided, request.constraint),
        )

    async def submit(self, request: EngineRequest, sink) -> _Running:
        """Start `request`; one task reads TensorRT-LLM's stream of results for it and pushes
        each step's new ids to `sink` (the multiplexed stream's pending frame, or generate()'s
        queue). Nothing else runs per token: no futures, no asyncio.wait (abort cancels the
        task instead), and each step reads only its delta (`token_ids_diff`)."""
        params = self._params(request)
        try:
            result = self.llm.generate_async(
                {"prompt_token_ids": request.prompt_ids}, sampling_params=params, streaming=True
            )
        except Exception as e:
            if (err := request_error(e)) is None:
                raise
            raise err from e
        running = _Running(request, result, sink)
        self.running[request.request_id] = running
        running.task = asyncio.get_running_loop().create_task(self._pump(running))
        return running

    async def _pump(self, r: _Running) -> None:
        request, result, sink = r.request, r.result, r.sink
        stop = frozenset(request.stop_ids)
        prompt = len(request.prompt_ids)
        finished = False
        try:
            async for out in result:
                completion = out.outputs[0]
                # The ids this response added (tensorrt_llm/executor/result.py: each response
                # extends `token_ids` and marks where it started), not the whole list again.
                new = completion.token_ids_diff
                if stop and new:
                    new = [t for t in new if t not in stop]
                r.count += len(new)
                reason = completion.finish_reason
                if reason is not None or out.finished:
                    finished = True
                    # cached_tokens: the prompt tokens its KV block reuse served; TensorRT-LLM's
                    # own OpenAI server reports the same (releases without it report 0).
                    cached = int(getattr(out, "cached_tokens", 0) or 0)
                    sink.put_nowait(EngineOutput(new, _finish(reason), prompt, r.count, cached))
                    return
                if new:
                    sink.put_nowait(EngineOutput(new))
            finished = True  # the results ended without a final one: report an abort
            sink.put_nowait(EngineOutput([], FinishReason.ABORT, prompt, r.count))
        except asyncio.CancelledError:
            if not r.aborted:
                raise
            finished = True  # _abort() has reported it
        except Exception as e:
            finished = True
            sink.fail(request_error(e) or e)
        finally:
            self.running.pop(request.request_id, None)
            if not finished:
                result.abort()  # the reader went away: free the slot

    async def generate(self, request: EngineRequest) -> AsyncGenerator[EngineOutput, None]:
        sink = _QueueSink()
        running = await self.submit(request, sink)
        finished = False
        try:
            while True:
                out = await sink.get()
                if isinstance(out, BaseException):
                    finished = True
                    raise out
                while not sink.empty() and out.finish_reason is None:
                    nxt = sink.get_nowait()
                    if isinstance(nxt, BaseException):
                        finished = True
                        raise nxt
                    out = out.then(nxt)
                finished = out.finish_reason is not None
                yield out
                if finished:
                    return
        finally:
            if not finished:
                self._abort(running)  # the caller went away: free the slot

    async def abort(self, request_id: str) -> bool:
        running = self.running.get(request_id)
        if running is None:
            return False
        self._abort(running)
        return True

    def _abort(self, running: _Running) -> None:
        """Abort in TensorRT-LLM and report the abort now: a request aborted while still
        queued gets no final response from it (read in its source), so none is awaited; the
        reader task is cancelled instead (no per-step race against an abort event)."""
        if running.aborted or running.task is None or running.task.done():
            return
        running.aborted = True
        running.result.abort()
        request = running.request
        self.running.pop(request.request_id, None)
        running.sink.put_nowait(
            EngineOutput([], FinishReason.ABORT, len(request.prompt_ids), running.count)
        )
        running.task.cancel()


class _Running:
    __slots__ = ("request", "result", "sink", "task", "aborted", "count")

    def __init__(self, request: EngineRequest, result, sink):
        self.request = request
        self.result = result
        self.sink = sink
        self.task: asyncio.Task | None = None
        self.aborted = False
        self.count = 0  # ids streamed so far: the completion count, kept as they go

    timed_out = False  # TensorRT-LLM queues without a timeout of ours


class _QueueSink(asyncio.Queue):
    """generate()'s sink: outputs, and a failure as an exception to raise."""

    def fail(self, exc: BaseException) -> None:
        self.put_nowait(exc)


# Messages of TensorRT-LLM's per-request failures that are the request's fault: its guided
# decoding rejecting the grammar (raised from the result iterator as
# tensorrt_llm.executor.utils.RequestError).
_CONSTRAINT = re.compile(r"grammar|guided|json.?schema|structural|xgrammar", re.IGNORECASE)


# LLM._check_arguments (llmapi/llm.py) refuses a prompt over max_num_tokens (without chunked
# prefill) with a ValueError in some releases and a RequestError in others.
_TOO_LONG = re.compile(r"max_num_tokens|prompt length", re.IGNORECASE)


def request_error(e: BaseException) -> EngineRequestError | None:
    """A TensorRT-LLM error that is the request's fault, as a 400; None for a real fault."""
    request_error_type = type(e).__name__ == "RequestError"
    if request_error_type and _CONSTRAINT.search(str(e)):
        return EngineRequestError(f"TensorRT-LLM refused the constraint: {e}", "constraint")
    if (request_error_type or isinstance(e, ValueError)) and _TOO_LONG.search(str(e)):
        return EngineRequestError(f"TensorRT-LLM refused the prompt: {e}", "messages")
    if isinstance(e, ValueError):  # generate_async's other checks
        return EngineRequestError(f"TensorRT-LLM refused the request: {e}", "messages")
    return None


def model_limits(folder: str, requested: int | None) -> tuple[int, int]:
    """(context length, vocabulary size) from the checkpoint's config: the length capped by
    what was asked for, the vocabulary as the model's logits have it (padded, not the
    tokenizer's length), which is what the template's constraints are compiled against."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    cfg = getattr(cfg, "text_config", None) or cfg
    length = int(getattr(cfg, "max_position_embeddings", 0) or 0) or None
    if requested:
        length = min(requested, length) if length else requested
    if not length:
        raise SystemExit(f"{folder}: its config gives no context length; pass --max-model-len")
    return length, int(cfg.vocab_size)


def _finish(reason) -> FinishReason:
    reason = str(reason or "stop").lower()
    if "length" in reason:
        return FinishReason.LENGTH
    if "cancel" in reason or "abort" in reason:
        return FinishReason.ABORT
    return FinishReason.STOP
