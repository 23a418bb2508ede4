"""The ggml step's declarations and libraries must agree: llama-cpp-py-sync's llama.h
declarations (b11548) against the library the step loads (one built for this CPU by
`make install`, services/decode/llama_lib.py, else xllamacpp's wheel, b11549) and against the
wheel itself, its fallback. A function declared but not exported, or a struct laid out
differently, would fail or corrupt memory at run time; this fails first."""

from __future__ import annotations

import os
import re

import pytest

from toolwire.services.decode.steps import ggml as ggml_step
from toolwire.services.decode.steps import llama_cpp_build as llama_lib

# Declared in llama.h but not in xllamacpp's export table (its extension links llama.cpp in
# statically and keeps what its server reaches); the step uses none of them. A libllama.so
# built as a shared library exports every one.
NOT_EXPORTED_BY_WHEEL = [
    "llama_max_parallel_sequences",
    "llama_model_quantize",
    "llama_model_quantize_default_params",
]


def _libraries():
    """(name, ffi, lib, missing exports allowed): the step's library and, if another, the
    wheel's."""
    ffi, lib = ggml_step._load()
    wheel = llama_lib.wheel_library()
    if ggml_step.loaded.path == wheel.path:
        return [("wheel", ffi, lib, NOT_EXPORTED_BY_WHEEL)]
    wheel_ffi, wheel_lib, callback = ggml_step.open_library(wheel.path)
    _libraries.keep = callback  # the log callback must outlive the library's use
    return [("loaded", ffi, lib, []), ("wheel", wheel_ffi, wheel_lib, NOT_EXPORTED_BY_WHEEL)]


@pytest.fixture(scope="module")
def libraries():
    return _libraries()


def test_every_declared_function_the_step_may_call_is_exported(libraries):
    from llama_cpp_py_sync._cffi_bindings import _LLAMA_H_CDEF

    names = sorted(set(re.findall(r"\b(llama_\w+)\s*\(", _LLAMA_H_CDEF)))
    assert len(names) > 200
    used = set(re.findall(r"lib\.(llama_\w+)", open(ggml_step.__file__).read()))
    assert used
    for which, _, lib, allowed in libraries:
        missing = []
        for name in names:
            try:
                getattr(lib, name)
            except AttributeError:
                missing.append(name)
        assert missing == allowed, which
        assert not used & set(missing), which


def test_the_default_parameters_read_as_llama_cpps(libraries):
    for which, ffi, lib, _ in libraries:
        ggml_step._check_abi(ffi, lib)  # raises on a shifted field
        cp = lib.llama_context_default_params()
        got = (cp.n_ctx, cp.n_threads > 0, cp.swa_full, cp.kv_unified)
        assert got == (512, True, True, False), which


def test_the_step_says_which_library_it_runs_on():
    ggml_step._load()
    assert ggml_step.loaded is not None and ggml_step.loaded.path.exists()
    built = llama_lib.build_dir() / llama_lib.LIBRARY
    if llama_lib.ENV not in os.environ and built.exists():
        assert ggml_step.loaded.path == built  # built for this CPU: preferred to the wheel


def test_a_named_library_is_the_only_candidate(monkeypatch):
    wheel = llama_lib.wheel_library()
    monkeypatch.setenv(llama_lib.ENV, "wheel")
    assert llama_lib.candidates() == [wheel]
    monkeypatch.setenv(llama_lib.ENV, "/nowhere/libllama.so")
    (named,) = llama_lib.candidates()
    assert named.explicit and str(named.path) == "/nowhere/libllama.so"
    with pytest.raises(OSError):
        ggml_step.open_library(named.path)
    monkeypatch.delenv(llama_lib.ENV)
    found = llama_lib.candidates()
    assert found[-1] == wheel and not any(c.explicit for c in found)
