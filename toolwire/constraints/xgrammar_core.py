"""xgrammar, loaded so that a process without torch can compile and match grammars.

xgrammar's package imports torch when it loads: its Python matcher (`matcher.py`) takes its
bitmask dtype from torch at import, and tvm-ffi, its binding layer, imports torch whenever it
is installed. Nothing toolwire asks of xgrammar needs it: grammars, the compiler and the
tokenizer info live in modules that never touch torch, and the compiled matcher fills any
int32 array that speaks DLPack. So in a process that keeps torch out
(toolwire/runtime/without_torch.py) this module imports those modules without the package's
`__init__`, and everywhere it gives one matcher, over the compiled core, that fills numpy
bitmasks (the torch step views them as tensors without a copy).

The modules named here are xgrammar 0.2's layout (`make install` and the CPU image pin 0.2.8).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
import sys
import types
from typing import Any

import numpy as np

from toolwire.runtime.without_torch import torch_kept_out


def _load() -> types.ModuleType:
    if "xgrammar" in sys.modules or not torch_kept_out():
        import xgrammar

        return xgrammar
    spec = importlib.util.find_spec("xgrammar")
    assert spec is not None and spec.submodule_search_locations is not None, "xgrammar installed"
    package = types.ModuleType("xgrammar")
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "xgrammar"
    sys.modules["xgrammar"] = package
    # The order the package's own __init__ keeps: the binding library before the classes.
    try:
        for name in ("load_binding", "exception", "grammar", "tokenizer_info", "compiler"):
            setattr(package, name, importlib.import_module(f"xgrammar.{name}"))
    except (ImportError, AttributeError, ValueError) as e:
        del sys.modules["xgrammar"]
        version = importlib.metadata.version("xgrammar")
        raise SystemExit(
            f"xgrammar {version} does not load without torch here ({e}); toolwire loads "
            "0.2.8's modules (pip install 'xgrammar==0.2.8')"
        ) from None
    return package


_xgr = _load()
_core: Any = importlib.import_module("xgrammar.base")._core

Grammar = _xgr.grammar.Grammar
GrammarCompiler = _xgr.compiler.GrammarCompiler
CompiledGrammar = _xgr.compiler.CompiledGrammar
TokenizerInfo = _xgr.tokenizer_info.TokenizerInfo


def bitmask_shape(batch_size: int, vocab_size: int) -> tuple[int, int]:
    """One bit a token, 32 tokens an int32, one row a sequence: xgrammar's bitmask layout."""
    return batch_size, math.ceil(vocab_size / 32)


def allocate_token_bitmask(batch_size: int, vocab_size: int) -> np.ndarray:
    return np.full(bitmask_shape(batch_size, vocab_size), -1, dtype=np.int32)


class GrammarMatcher:
    """One sequence's place in its grammar: xgrammar's compiled matcher, called directly."""

    __slots__ = ("_handle",)

    def __init__(self, compiled: Any, override_stop_tokens: list[int] | None = None):
        # (grammar, stop tokens, terminate without a stop token, rollback limit: none,
        # default temperature)
        self._handle = _core.GrammarMatcher(compiled._handle, override_stop_tokens, False, -1, None)

    def accept_token(self, token_id: int) -> bool:
        return self._handle.accept_token(token_id, False)

    def accept_string(self, text: str) -> bool:
        """Whether the grammar takes `text` next, as bytes (bench.conformance feeds instances)."""
        return self._handle.accept_string(text, False)

    def fill_next_token_bitmask(self, bitmask: np.ndarray, index: int = 0) -> bool:
        """Row `index` of `bitmask` gets the tokens the grammar admits next; False when it
        admits every token (the row need not be applied)."""
        return self._handle.fill_next_token_bitmask(bitmask, index, False)

    def find_jump_forward_string(self) -> str:
        return str(self._handle.find_jump_forward_string())

    def rollback(self, num_tokens: int = 1) -> None:
        self._handle.rollback(num_tokens)

    def is_terminated(self) -> bool:
        return self._handle.is_terminated()

    def is_completed(self) -> bool:
        return self._handle.is_completed()


def apply_token_bitmask_inplace(
    logits: np.ndarray, bitmask: np.ndarray, indices: list[int] | None = None
) -> None:
    """The banned tokens of rows `indices` (all rows: None) of float32 logits to -inf, in
    place: xgrammar's CPU kernel, the one its torch wrapper calls, given numpy's pointers
    (a numpy pass over the unpacked bits cost 1.4x it at 16 rows; bench/mask_apply.py)."""
    if logits.dtype != np.float32 or bitmask.dtype != np.int32 or logits.ndim != 2:
        raise ValueError("float32 logits (rows, vocab) and an int32 bitmask")
    item, word = logits.itemsize, bitmask.itemsize
    _core.kernels.apply_token_bitmask_inplace_cpu(
        logits.ctypes.data,
        logits.shape,
        (logits.strides[0] // item, logits.strides[1] // item),
        bitmask.ctypes.data,
        bitmask.shape,
        (bitmask.strides[0] // word, bitmask.strides[1] // word),
        min(logits.shape[1], bitmask.shape[1] * 32),
        indices,
        "float32",
    )
