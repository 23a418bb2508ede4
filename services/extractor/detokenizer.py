"""Incremental detokenization: text for new token ids, never splitting a multi-byte character."""

from __future__ import annotations


class IncrementalDetokenizer:
    """Decodes a short window of recent ids each time (cf. vLLM's prefix/read offsets), so the
    cost per chunk stays flat however long the output grows."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        # A fast tokenizer's Rust decoder directly: the same text without transformers'
        # per-call argument handling (a third of the extractor's CPU per token).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast = backend.decode if backend is not None else None
        self.ids: list[int] = []
        self.prefix = 0  # window start: context for the tokenizer's merges
        self.read = 0  # ids already turned into text

    def _decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return self._fast(ids, skip_special_tokens=False)
        return self.tokenizer.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""  # an incomplete UTF-8 sequence: wait for the next id

    def flush(self) -> str:
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before) :]
