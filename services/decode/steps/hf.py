"""The fallback step for architectures TorchLlamaStep does not compute: transformers' own forward,
one sequence at a time, each slot holding its own DynamicCache. Correct for any causal LM
transformers loads, but unbatched: the engine logs that it runs this way."""

from __future__ import annotations

import copy

import torch

from . import Span
from .torch_llama import MIN_PREFILL


class TransformersStep:
    min_prefill = MIN_PREFILL
    library = "transformers' forward"
    uses_torch = True
    verifies_drafts = False  # one row a span: speculation is the ggml step's
    kv_tokens = None  # each slot holds its own cache; no shared pool

    def __init__(self, model, max_slots: int, max_len: int):
        self.model = model
        self.device = next(model.parameters()).device
        self.caches: list = [None] * max_slots

    def release(self, slot: int) -> None:
        """Nothing to give back: the slot's next prefill starts a new cache."""

    def move(self, src: int, dst: int, length: int) -> None:
        self.caches[dst] = self.caches[src]

    def save(self, slot: int, length: int):
        cache = copy.deepcopy(self.caches[slot])
        cache.crop(length)
        nbytes = sum(
            t.nbytes
            for layer in getattr(cache, "layers", [])
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if t is not None
        )
        return cache, nbytes

    def load(self, slot: int, saved, length: int) -> None:
        cache = copy.deepcopy(saved)
        cache.crop(length)
        self.caches[slot] = cache

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        self.load(dst, self.caches[src], length)

    def forward(self, decode: list[Span], prefill: list[Span]) -> torch.Tensor:
        from transformers import DynamicCache

        rows = []
        for s in decode + prefill:
            if s.start == 0:
                self.caches[s.slot] = DynamicCache()
            ids = torch.tensor([s.tokens], device=self.device)
            positions = torch.arange(s.start, s.start + len(s.tokens), device=self.device)[None]
            out = self.model(
                input_ids=ids,
                position_ids=positions,
                past_key_values=self.caches[s.slot],
                use_cache=True,
                logits_to_keep=1,
            )
            rows.append(out.logits[0, -1])
        return torch.stack(rows).float()
