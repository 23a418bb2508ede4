"""The ggml step's two packages must agree: llama-cpp-py-sync's llama.h declarations (b11548)
and xllamacpp's library (b11549). A function declared but not exported, or a struct laid out
differently, would fail or corrupt memory at run time; this fails first."""

from __future__ import annotations

import re

from toolwire.services.decode import ggml_step

# Declared in llama.h but not in xllamacpp's export table (its extension links llama.cpp in
# statically and keeps what its server reaches); the step uses none of them.
NOT_EXPORTED = [
    "llama_max_parallel_sequences",
    "llama_model_quantize",
    "llama_model_quantize_default_params",
]


def test_every_declared_function_the_step_may_call_is_exported():
    from llama_cpp_py_sync._cffi_bindings import _LLAMA_H_CDEF

    ffi, lib = ggml_step._load()
    names = sorted(set(re.findall(r"\b(llama_\w+)\s*\(", _LLAMA_H_CDEF)))
    assert len(names) > 200
    missing = []
    for name in names:
        try:
            getattr(lib, name)
        except AttributeError:
            missing.append(name)
    assert missing == NOT_EXPORTED
    used = set(re.findall(r"lib\.(llama_\w+)", open(ggml_step.__file__).read()))
    assert used and not used & set(missing)


def test_the_default_parameters_read_as_llama_cpps():
    ffi, lib = ggml_step._load()
    ggml_step._check_abi(ffi, lib)  # raises on a shifted field
    cp = lib.llama_context_default_params()
    assert (cp.n_ctx, cp.n_threads > 0, cp.swa_full, cp.kv_unified) == (512, True, True, False)
