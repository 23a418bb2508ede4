"""The ggml step's tokenizer: the GGUF's own vocabulary, through llama.cpp.

The decode process asks a tokenizer three things: the ids of the text a grammar forces
(jump-forward), the eos token, and the vocabulary the grammar compiler masks. On the ggml step
llama.cpp already holds the GGUF's vocabulary and tokenizer, so they come from there, and the
process loads no tokenizer of its own: the tokenizers library and its tables were 29 MB of
the decode process (docs/operations.md, "Memory").

The template service and the extractor load the tokenizer transformers converts from the same
GGUF (model_source.load_tokenizer). The two must agree, so this checks at load that both name
the same token at a spread of ids, and takes the converted tokenizer's eos and the vocabulary
type xgrammar detects in its tokenizer.json. On the embedded model the grammar's vocabulary
serializes identically to the template's, and llama.cpp's ids for every format's forced text
are the converted tokenizer's (tests/engine_contract/test_gguf_tokenizer.py).
"""

from __future__ import annotations

import json

from toolwire.constraints import xgrammar_core as xgr
from toolwire.runtime import model_source

from .steps.ggml import GgmlStep


class GgufTokenizer:
    """What the scheduler and the constraint compiler read of a tokenizer, from the GGUF. The
    vocabulary's strings and tokenizer.json's text are dropped once the grammar's vocabulary
    is built (together 8 MB of a process that needs neither again)."""

    def __init__(self, step: GgmlStep, source: model_source.ModelSource):
        self.step = step
        texts = vocabulary(step)
        tokenizer_json, eos = model_source.gguf_tokenizer_files(source)
        check_agrees(texts, tokenizer_json)
        found = texts.index(eos) if eos in texts else None
        self.eos_token_id = int(step.lib.llama_vocab_eos(step.vocab)) if found is None else found
        self.vocab_size = len(texts)
        self.info = xgr.TokenizerInfo.from_vocabulary(
            texts, tokenizer_json, self.vocab_size, [self.eos_token_id]
        )

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        assert not add_special_tokens, "forced text is encoded as it stands"
        return self.step.encode(text)


def vocabulary(step: GgmlStep) -> list[str]:
    """The GGUF's token strings by id, as tokenizer.json writes them (byte-level or ▁ forms)."""
    return [step.token_text(i) for i in range(step.n_vocab)]


def check_agrees(texts: list[str], tokenizer_json: str) -> None:
    """The GGUF's vocabulary and the converted tokenizer's (tokenizer.json: the model's vocab
    and its added tokens) must agree: the GGUF's holds every id of the tokenizer's (a model's
    padded rows may add more), and both name the same token at a spread of ids and at every
    added (special) token."""
    parsed = json.loads(tokenizer_json)
    vocab = parsed["model"]["vocab"]  # BPE and WordPiece: {token: id}; Unigram: [[token, score]]
    pairs = vocab.items() if isinstance(vocab, dict) else ((v[0], i) for i, v in enumerate(vocab))
    theirs = {idx: token for token, idx in pairs}
    added = {t["id"]: t["content"] for t in parsed.get("added_tokens") or []}
    theirs.update(added)
    n = max(theirs) + 1
    if len(texts) < n:
        raise SystemExit(f"the GGUF has {len(texts)} tokens, the tokenizer {n}")
    ids = sorted({0, 1, 2, n // 7, n // 3, n // 2, n - 1, *added})
    differ = [i for i in ids if theirs.get(i) != texts[i]]
    if differ:
        shown = [(i, texts[i], theirs.get(i)) for i in differ[:5]]
        raise SystemExit(f"GGUF and tokenizer vocabularies differ at ids {differ}: {shown}")
