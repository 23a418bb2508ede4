"""xgrammar, loaded so that a process without torch, or without transformers, can compile and
match grammars.

xgrammar's package imports torch when it loads: its Python matcher (`matcher.py`) takes its
bitmask dtype from torch at import, and tvm-ffi, its binding layer, imports torch whenever it
is installed. Its tokenizer-info module imports transformers (25 MB resident) for the types it
reads a Hugging Face tokenizer by, and its compiler module imports that one. Nothing toolwire
asks of xgrammar needs either: the grammars live in a module that touches neither, and the
compiled core takes a vocabulary, compiles, and fills any int32 array that speaks DLPack. So in
a process that keeps torch out (toolwire/runtime/without_torch.py) this module imports the
grammar module without the package's `__init__`, and everywhere it gives the tokenizer info,
the compiler and the matcher as thin classes over the compiled core; the matcher fills numpy
bitmasks (the torch step views them as tensors without a copy). Reading a transformers
tokenizer (`TokenizerInfo.from_huggingface`) loads xgrammar's own module, where transformers
is loaded already.

The modules named here are xgrammar 0.2's layout (`make install` and the CPU image pin 0.2.8).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
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
        for name in ("load_binding", "exception", "grammar"):
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
VOCAB_TYPES = {"raw": 0, "byte_fallback": 1, "byte_level": 2}  # xgrammar's VocabType values


class TokenizerInfo:
    """A tokenizer's vocabulary as the compiler reads it: xgrammar's core object."""

    __slots__ = ("_handle",)

    def __init__(
        self,
        encoded_vocab: list[str] | list[bytes],
        *,
        stop_token_ids: list[int],
        vocab_size: int | None = None,
        vocab_type: str = "raw",
        add_prefix_space: bool = False,
    ):
        self._handle = _core.TokenizerInfo(
            encoded_vocab, VOCAB_TYPES[vocab_type], vocab_size, stop_token_ids, add_prefix_space
        )

    @classmethod
    def _of(cls, handle: Any) -> TokenizerInfo:
        info = cls.__new__(cls)
        info._handle = handle
        return info

    @classmethod
    def from_huggingface(
        cls, tokenizer: Any, vocab_size: int | None = None, stop_token_ids: list[int] | None = None
    ) -> TokenizerInfo:
        """A transformers tokenizer, as xgrammar reads it (its own module: transformers is
        loaded wherever such a tokenizer is)."""
        module = importlib.import_module("xgrammar.tokenizer_info")
        info = module.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        return cls._of(info._handle)

    @classmethod
    def from_tokenizer_json(
        cls, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]
    ) -> TokenizerInfo:
        """A `tokenizers.Tokenizer` (a tokenizer.json) without transformers: what xgrammar
        does for a transformers fast tokenizer, which wraps one (the vocabulary by id, its
        type and prefix space detected from the serialized tokenizer). The template service
        reads its transformers tokenizer with `from_huggingface`; the two agree
        (tests/unit/constraints/test_xgrammar_core.py)."""
        encoded = [""] * vocab_size
        for token, idx in tokenizer.get_vocab(with_added_tokens=True).items():
            if idx < vocab_size:
                encoded[idx] = token
        found = json.loads(_core.TokenizerInfo._detect_metadata_from_hf(tokenizer.to_str()))
        return cls._of(
            _core.TokenizerInfo(
                encoded, found["vocab_type"], vocab_size, stop_token_ids, found["add_prefix_space"]
            )
        )

    @classmethod
    def deserialize_json(cls, text: str) -> TokenizerInfo:
        return cls._of(_core.TokenizerInfo.deserialize_json(text))

    def serialize_json(self) -> str:
        return str(self._handle.serialize_json())

    @property
    def vocab_size(self) -> int:
        return int(self._handle.vocab_size())


class CompiledGrammar:
    """A grammar compiled against one vocabulary: what a matcher runs."""

    __slots__ = ("_handle",)

    def __init__(self, handle: Any):
        self._handle = handle

    @property
    def memory_size_bytes(self) -> int:
        return int(self._handle.memory_size_bytes())


class GrammarCompiler:
    """xgrammar's compiler over one vocabulary."""

    __slots__ = ("_handle",)

    def __init__(self, info: TokenizerInfo, max_threads: int = 1, cache_enabled: bool = False):
        # (tokenizer info, threads, cache, cache limit: none)
        self._handle = _core.GrammarCompiler(info._handle, max_threads, cache_enabled, -1)

    def compile_grammar(self, grammar: Any) -> CompiledGrammar:
        """A Grammar (xgrammar's), or EBNF text (its root rule `root`)."""
        if isinstance(grammar, str):
            return CompiledGrammar(self._handle.compile_grammar_from_strings(grammar, "root"))
        return CompiledGrammar(self._handle.compile_grammar_ebnf(grammar._handle))


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
