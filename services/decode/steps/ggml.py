"""The step on ggml: llama.cpp's library computes the forward pass, toolwire keeps the rest.

The batch engine's scheduler (services/decode/scheduler.py) calls a step with spans of new
tokens per cache slot and gets one row of logits per span (a row per token of a draft's span),
a numpy array; it applies the xgrammar masks and samples in numpy (sampling.py), so a process
that runs this step never imports torch (services/decode/step_choice.py). Here the spans become
one llama_batch: each slot is a llama sequence id, each span's last token (each token of a
draft's) asks for logits, and the KV cache is llama.cpp's, one pool shared by all sequences
(`kv_unified`): a shared prefix (llama_memory_seq_cp) costs no copy, a finished sequence's
cells go back to the pool.

Why ggml on a CPU: the embedded model ships as a Q4_1 GGUF. torch has to decode it to fp32
at every start (seconds, and the weights four times over in memory) and runs slower kernels
on it; llama.cpp's kernels run on the file as it is (docs/performance.md, The decode step).

The library: no llama.cpp binding on PyPI installs here without a ~9 minute compile except
this pair. `xllamacpp` (Xorbits, maintained) ships a manylinux2014 CPU wheel whose
xllamacpp.abi3.so exports the whole llama.h C API (its Python layer is a server, so only the
library is used, opened without importing the package). `llama-cpp-py-sync` ships generated
CFFI declarations of llama.h at llama.cpp b11548; its own libllama.so needs GLIBC 2.38, so it
is never loaded (its get_lib() is never called), only its declarations. xllamacpp
2026.10.11549 is built from llama.cpp b11549, one commit later. What was checked: the tag diff
itself could not be read here (the llama.cpp snapshot is 1.4 GB, over the fetch limit), so the
match is checked where a mismatch would show: every llama_* function declared is exported by
the library (tests/unit/decode/test_ggml_abi.py), and at load `_check_abi` reads the library's own
default context and model parameters through the declared structs and refuses to run unless
the fields on either side of the ones that moved lately (n_rs_seq, n_outputs_max,
moe_cache_size, samplers, ctx_other) hold llama.cpp's defaults.

`make install` also builds llama.cpp from xllamacpp's sdist for this CPU, without OpenMP
(llama_cpp_build.py: under OMP_WAIT_POLICY=passive the wheel's OpenMP barriers sleep at
every op); the step opens that library when it passes the same
check, else the wheel's, and logs which (`ggml step: ...`).
TOOLWIRE_LLAMA_LIB=wheel or =/path/to/libllama.so names one (no fallback then).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from toolwire.runtime.cpus import usable_cpus

from . import Span, llama_cpp_build

log = logging.getLogger("toolwire.decode")

GGML_TYPE_F16 = 1
GGML_TYPE_Q8_0 = 8
KV_TYPES = {"f16": GGML_TYPE_F16, "q8_0": GGML_TYPE_Q8_0}

_ffi = None
_lib = None
_log_callback = None  # the C callback must outlive every call into the library
loaded: llama_cpp_build.Library | None = None  # which library _load() opened


class KVPoolFull(RuntimeError):
    """The sequences together hold more tokens than the KV pool has cells."""


def available() -> str | None:
    """None when the library can load here; else why not."""
    try:
        _load()
    except Exception as e:  # any failure means: use the torch step
        return f"{type(e).__name__}: {e}"
    return None


def _load():
    """The library the step runs on: the first of llama_cpp_build.candidates() that opens and passes
    the ABI check (a library built for this CPU, else xllamacpp's wheel)."""
    global _ffi, _lib, _log_callback, loaded
    if _lib is not None:
        return _ffi, _lib
    # ggml's OpenMP threads spin between steps by default; beside the scheduler thread, the
    # gRPC server and the other services on the same cores that cost 18x the step time under
    # load. The OpenMP runtime reads this once, when it loads: where torch is imported first,
    # its libgomp.so.1 is the one the library shares (same soname), so the decode service
    # sets it before torch loads (toolwire/stack/cli.py); this covers the other callers.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    tried = []
    for cand in llama_cpp_build.candidates():
        try:
            ffi, lib, on_log = open_library(cand.path)
        except Exception as e:
            if cand.explicit:
                raise
            log.warning("ggml step: %s unusable (%s); trying the next", cand.label, e)
            tried.append(f"{cand.label}: {e}")
            continue
        lib.llama_backend_init()
        _ffi, _lib, _log_callback, loaded = ffi, lib, on_log, cand
        log.info("ggml step: %s, %s", cand.label, cand.path)
        return ffi, lib
    raise RuntimeError("no llama.cpp library loads: " + "; ".join(tried))


def open_library(path):
    """(ffi, lib, log callback) for one library file, its ABI checked; the callback must be
    kept alive as long as the library is used."""
    from llama_cpp_py_sync._cffi_bindings import get_ffi

    ffi = get_ffi()
    lib = ffi.dlopen(str(path))

    # The loader prints a hundred lines at every start: keep warnings and errors only.
    last = [0]

    @ffi.callback("void(enum ggml_log_level, const char *, void *)")
    def on_log(level, text, _user):
        level = last[0] if level == 5 else level  # CONT: the previous line's level
        last[0] = level
        if level >= 3:
            msg = ffi.string(text).decode(errors="replace").rstrip()
            if msg:
                log.log(logging.ERROR if level == 4 else logging.WARNING, "llama.cpp: %s", msg)

    lib.llama_log_set(on_log, ffi.NULL)
    _check_abi(ffi, lib)
    return ffi, lib, on_log


def _check_abi(ffi, lib) -> None:
    """Read the library's default parameters through the declared structs: a field added or
    removed on one side shifts the ones after it, and these values stop being llama.cpp's."""
    cp = lib.llama_context_default_params()
    mp = lib.llama_model_default_params()
    got = {
        "n_batch": cp.n_batch,
        "n_ubatch": cp.n_ubatch,
        "n_seq_max": cp.n_seq_max,
        "type_k": cp.type_k,
        "type_v": cp.type_v,
        "abort_callback": cp.abort_callback == ffi.NULL,
        "offload_kqv": cp.offload_kqv,
        "samplers": cp.samplers == ffi.NULL,
        "n_samplers": cp.n_samplers,
        "ctx_other": cp.ctx_other == ffi.NULL,
        "vocab_only": mp.vocab_only,
        "progress_callback": mp.progress_callback == ffi.NULL,
    }
    want = {
        "n_batch": 2048,
        "n_ubatch": 512,
        "n_seq_max": 1,
        "type_k": GGML_TYPE_F16,
        "type_v": GGML_TYPE_F16,
        "abort_callback": True,
        "offload_kqv": True,
        "samplers": True,
        "n_samplers": 0,
        "ctx_other": True,
        "vocab_only": False,
        "progress_callback": True,
    }
    if got != want:
        bad = {k: got[k] for k in want if got[k] != want[k]}
        raise RuntimeError(f"llama.h declarations do not match the library: {bad}")


def default_threads() -> int:
    return usable_cpus()  # the affinity, capped by a container's CPU quota


class GgmlStep:
    """TorchLlamaStep's interface (forward, move, save, load, copy_prefix, release) on llama.cpp.

    Slot i is llama sequence i; one more sequence (`scratch`) holds a prefix while it is
    saved."""

    # Prompt tokens a reusing request still prefills (the torch step: 16, for its BLAS). Here
    # the last token alone gave the bits of the whole prefill on 60- and 137-token prompts
    # (tails of 3 to 16 tokens did not, on the 137: other kernels for other row counts), and
    # each prefilled token is TTFT: at one stream, 16 of them were most of toolwire's.
    min_prefill = 1
    library = "llama.cpp's kernels"
    uses_torch = False
    verifies_drafts = True

    def __init__(
        self,
        gguf: str | os.PathLike[str],
        max_slots: int,
        kv_tokens: int = 8192,
        threads: int | None = None,
        n_batch: int = 512,
        kv_type: str = "q8_0",
        unified: bool = True,
    ):
        ffi, lib = _load()
        self.ffi, self.lib = ffi, lib
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = lib.llama_model_load_from_file(str(gguf).encode(), mp)
        if self.model == ffi.NULL:
            raise RuntimeError(f"llama.cpp could not load {gguf}")
        threads = threads or default_threads()
        cp = lib.llama_context_default_params()
        cp.n_ctx = kv_tokens
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = max_slots + 1
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.type_k = cp.type_v = KV_TYPES[kv_type]
        # One pool of cells for every sequence (else each gets n_ctx / n_seq_max of its own),
        # so that a copied prefix shares cells instead of copying them. Its cost: attention
        # loops over every sequence's cells (bench/step.py --per-sequence-streams measures it).
        cp.kv_unified = unified
        cp.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, cp)
        if self.ctx == ffi.NULL:
            raise RuntimeError(
                "llama.cpp could not create a context (quantized KV needs flash attention?)"
            )
        self.mem = lib.llama_get_memory(self.ctx)
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = lib.llama_model_n_ctx_train(self.model)
        self.kv_tokens = kv_tokens
        self.n_batch = n_batch
        self.threads = threads
        self.scratch = max_slots
        self._batch_arrays(n_batch, max_slots + 1)

    def _batch_arrays(self, n: int, n_seq: int) -> None:
        """One llama_batch of n tokens, written through numpy views: filling it token by token
        through cffi costs ~1 us a field, 5 ms for a 1,000-token prompt."""
        ffi = self.ffi
        self._token = ffi.new("llama_token[]", n)
        self._pos = ffi.new("llama_pos[]", n)
        self._nseq = ffi.new("int32_t[]", n)
        self._logits = ffi.new("int8_t[]", n)
        self._seq_ptrs = ffi.new("llama_seq_id *[]", n)
        self._seq_vals = ffi.new("llama_seq_id[]", list(range(n_seq)))  # seq_vals[s] == s
        self.np_token = np.frombuffer(ffi.buffer(self._token), np.int32)
        self.np_pos = np.frombuffer(ffi.buffer(self._pos), np.int32)
        self.np_logits = np.frombuffer(ffi.buffer(self._logits), np.int8)
        self.np_seq_ptrs = np.frombuffer(ffi.buffer(self._seq_ptrs), np.uint64)
        np.frombuffer(ffi.buffer(self._nseq), np.int32)[:] = 1
        self._seq_base = int(ffi.cast("uintptr_t", self._seq_vals))
        self.batch = ffi.new("llama_batch *")
        b = self.batch
        b.token, b.embd, b.pos = self._token, ffi.NULL, self._pos
        b.n_seq_id, b.seq_id, b.logits = self._nseq, self._seq_ptrs, self._logits

    def close(self) -> None:
        if self.ctx is not None:
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = None

    def set_threads(self, n: int) -> None:
        """The next llama_decode's thread count: its threads start with each call (no
        threadpool is attached), so any count up to the CPUs costs nothing to change to."""
        self.lib.llama_set_n_threads(self.ctx, n, n)
        self.threads = n

    # -- the GGUF's vocabulary (gguf_tokenizer.py) ------------------------------------------
    def token_text(self, token: int) -> str:
        return self.ffi.string(self.lib.llama_vocab_get_text(self.vocab, token)).decode()

    def encode(self, text: str) -> list[int]:
        """text's ids by llama.cpp's tokenizer, special tokens' text read as those tokens and
        nothing added (no bos)."""
        raw = text.encode()
        room = len(raw) + 1  # at most a token a byte
        ids = self.ffi.new("llama_token[]", room)
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), ids, room, False, True)
        if n < 0:
            raise RuntimeError(f"llama_tokenize needed {-n} tokens for {len(raw)} bytes")
        return list(ids[0:n])

    # -- cache slots ----------------------------------------------------------------------
    def release(self, slot: int) -> None:
        """A finished sequence's cells back to the pool."""
        self.lib.llama_memory_seq_rm(self.mem, slot, -1, -1)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """dst holds src's first `length` positions (the same cells: no copy)."""
        self.lib.llama_memory_seq_rm(self.mem, dst, -1, -1)
        self.lib.llama_memory_seq_cp(self.mem, src, dst, 0, length)

    def move(self, src: int, dst: int, length: int) -> None:
        self.copy_prefix(src, dst, length)
        self.release(src)

    def save(self, slot: int, length: int) -> tuple[bytes, int]:
        """The slot's first `length` positions, serialized by llama.cpp (state_seq)."""
        lib, s = self.lib, self.scratch
        self.copy_prefix(slot, s, length)
        size = lib.llama_state_seq_get_size(self.ctx, s)
        buf = bytearray(size)
        wrote = lib.llama_state_seq_get_data(self.ctx, self.ffi.from_buffer(buf), size, s)
        self.release(s)
        if wrote != size:
            raise RuntimeError(f"llama_state_seq_get_data wrote {wrote} of {size} bytes")
        return bytes(buf), size

    def load(self, slot: int, saved: bytes, length: int) -> None:
        self.release(slot)
        ok = self.lib.llama_state_seq_set_data(
            self.ctx, self.ffi.from_buffer(saved), len(saved), slot
        )
        if ok == 0:
            self.release(slot)
            raise KVPoolFull(
                f"no room in the KV pool of {self.kv_tokens} tokens for a saved prefix"
            )
        self.lib.llama_memory_seq_rm(self.mem, slot, length, -1)

    # -- the forward pass -------------------------------------------------------------------
    def forward(self, decode: list[Span], prefill: list[Span]) -> np.ndarray:
        """Logits (fp32) of the last token of each span (each token of an every_row span):
        decode spans first, then prefill.
        A span starting before what its sequence holds drops the rest first (a reused slot)."""
        lib, mem = self.lib, self.mem
        spans = decode + prefill
        token_l: list[int] = []
        pos_l: list[int] = []
        seq_l: list[int] = []
        want_l: list[int] = []
        for s in spans:
            if lib.llama_memory_seq_pos_max(mem, s.slot) >= s.start:
                lib.llama_memory_seq_rm(mem, s.slot, s.start, -1)
            n = len(s.tokens)
            token_l.extend(s.tokens)
            pos_l.extend(range(s.start, s.start + n))
            seq_l.extend([s.slot] * n)
            want_l.extend([1] * n if s.every_row else [0] * (n - 1) + [1])
        # numpy, not torch: torch ran this copy on its OpenMP pool (docs/performance.md, The
        # decode step), and this process may run without torch.
        out_np = np.empty((sum(want_l), self.n_vocab), dtype=np.float32)
        tokens, pos = np.asarray(token_l, np.int32), np.asarray(pos_l, np.int32)
        seqs, want = np.asarray(seq_l, np.uint64), np.asarray(want_l, np.int8)
        row = 0
        for at in range(0, len(tokens), self.n_batch):  # the library takes n_batch at a time
            end = min(at + self.n_batch, len(tokens))
            n = end - at
            self.np_token[:n] = tokens[at:end]
            self.np_pos[:n] = pos[at:end]
            self.np_logits[:n] = want[at:end]
            self.np_seq_ptrs[:n] = self._seq_base + 4 * seqs[at:end]
            self.batch.n_tokens = n
            rc = lib.llama_decode(self.ctx, self.batch[0])
            if rc == 1:
                raise KVPoolFull(f"no room in the KV pool of {self.kv_tokens} tokens (--kv-tokens)")
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            k = int(want[at:end].sum())
            if k:
                ptr = lib.llama_get_logits(self.ctx)
                rows = np.frombuffer(self.ffi.buffer(ptr, k * self.n_vocab * 4), np.float32)
                out_np[row : row + k] = rows.reshape(k, self.n_vocab)
                row += k
        return out_np
