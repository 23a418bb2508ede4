"""xgrammar, loaded so that a process without torch, transformers or pydantic can compile and
match grammars.

xgrammar's package imports torch when it loads: its Python matcher (`matcher.py`) takes its
bitmask dtype from torch at import, and tvm-ffi, its binding layer, imports torch whenever it
is installed. Its tokenizer-info module imports transformers (25 MB resident) for the types it
reads a Hugging Face tokenizer by, its compiler module imports that one, and its grammar
module imports pydantic (12 MB with the module) to take pydantic models as schemas. Nothing
toolwire asks of xgrammar needs any of them: the compiled core parses grammars from text,
takes a vocabulary, compiles, and fills any int32 array that speaks DLPack. So in a process
that keeps torch out (toolwire/runtime/without_torch.py) this module loads the binding
without the package's `__init__`, and everywhere it gives the grammar, the tokenizer info,
the compiler and the matcher as thin classes over the compiled core; the matcher fills numpy
bitmasks (the torch step views them as tensors without a copy). Reading a transformers
tokenizer (`TokenizerInfo.from_huggingface`) loads xgrammar's own module, where transformers
is loaded already.

The modules and calls named here are xgrammar 0.2's (`make install` and the CPU image pin
0.2.8).
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


def _load() -> None:
    if "xgrammar" in sys.modules or not torch_kept_out():
        import xgrammar  # noqa: F401  (the whole package: torch may load here)

        return
    spec = importlib.util.find_spec("xgrammar")
    assert spec is not None and spec.submodule_search_locations is not None, "xgrammar installed"
    package = types.ModuleType("xgrammar")
    package.__spec__ = spec
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "xgrammar"
    sys.modules["xgrammar"] = package
    # The order the package's own __init__ keeps: the binding library, its errors, the core.
    try:
        for name in ("load_binding", "exception", "base"):
            setattr(package, name, importlib.import_module(f"xgrammar.{name}"))
    except (ImportError, AttributeError, ValueError) as e:
        del sys.modules["xgrammar"]
        version = importlib.metadata.version("xgrammar")
        raise SystemExit(
            f"xgrammar {version} does not load without torch here ({e}); toolwire loads "
            "0.2.8's modules (pip install 'xgrammar==0.2.8')"
        ) from None


_load()
_core: Any = importlib.import_module("xgrammar.base")._core


class Grammar:
    """A grammar, parsed by xgrammar's core from one of the forms toolwire writes (text only:
    xgrammar's own class also takes pydantic models, and imports pydantic for them)."""

    __slots__ = ("_handle",)

    def __init__(self, handle: Any):
        self._handle = handle

    def __str__(self) -> str:
        """The grammar as EBNF."""
        return str(self._handle.to_string())

    @classmethod
    def from_ebnf(cls, text: str, root_rule_name: str = "root") -> Grammar:
        return cls(_core.Grammar.from_ebnf(text, root_rule_name))

    @classmethod
    def from_json_schema(
        cls,
        schema: str | dict,
        *,
        any_whitespace: bool = True,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        strict_mode: bool = True,
        max_whitespace_cnt: int | None = None,
        any_order: bool = False,
    ) -> Grammar:
        """xgrammar's defaults; toolwire's own options are compiler.JSON_SCHEMA_OPTIONS."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        # (..., print the converted EBNF: no, ...)
        return cls(
            _core.Grammar.from_json_schema(
                text,
                any_whitespace,
                indent,
                separators,
                strict_mode,
                max_whitespace_cnt,
                False,
                any_order,
            )
        )

    @classmethod
    def from_regex(cls, text: str) -> Grammar:
        return cls(_core.Grammar.from_regex(text, False))

    @classmethod
    def from_lark(cls, text: str) -> Grammar:
        # (no tokenizer info: special tokens are not named; no named grammars)
        return cls(_core.Grammar.from_lark(text, None, [], []))

    @classmethod
    def from_structural_tag(cls, text: str) -> Grammar:
        """A structural tag as JSON (toolwire writes them as text)."""
        return cls(_core.Grammar.from_structural_tag(text))


VOCAB_TYPES = {"raw": 0, "byte_fallback": 1, "byte_level": 2}  # xgrammar's VocabType values


class TokenizerInfo:
    """A tokenizer's vocabulary as the compiler reads it: xgrammar's core object."""

    __slots__ = ("_handle",)

    def __init__(
        self,
        encoded_vocab: list[str] | list[bytes],
        *,
        stop_token_ids: list[int] | None = None,
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
    def from_vocabulary(
        cls, encoded: list[str], tokenizer_json: str, vocab_size: int, stop_token_ids: list[int]
    ) -> TokenizerInfo:
        """The vocabulary by id (token strings as tokenizer.json writes them), its type and
        prefix space detected from the tokenizer.json text as xgrammar detects them for a
        fast tokenizer: the ggml step reads its strings from the GGUF and needs no tokenizer
        object (services/decode/gguf_tokenizer.py). It serializes as `from_huggingface` does
        (tests/engine_contract/test_gguf_tokenizer.py)."""
        found = json.loads(_core.TokenizerInfo._detect_metadata_from_hf(tokenizer_json))
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

    def __init__(
        self,
        compiled: Any,
        override_stop_tokens: list[int] | None = None,
        terminate_without_stop_token: bool = False,
    ):
        # (grammar, stop tokens, terminate without a stop token, rollback limit: none,
        # default temperature)
        self._handle = _core.GrammarMatcher(
            compiled._handle, override_stop_tokens, terminate_without_stop_token, -1, None
        )

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


def accepts_whole(grammar: Grammar, text: str) -> bool:
    """Whether `grammar` matches all of `text`, as bytes and to its end (tests, benches):
    xgrammar's own test helper, over these classes."""
    compiled = GrammarCompiler(TokenizerInfo([])).compile_grammar(grammar)
    matcher = GrammarMatcher(compiled, terminate_without_stop_token=True)  # no stop tokens
    return matcher.accept_string(text) and matcher.is_terminated()


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
