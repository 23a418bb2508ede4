"""A KV cache for continuous batching with transformers models.

Rows are the running sequences, right-aligned over shared columns (left padding, masked), held
in buffers allocated once: a decode step writes one column in place instead of concatenating
the whole cache, and sequences join (after their own prefill) or leave between steps.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer


class _BufferLayer(DynamicLayer):
    def __init__(self, owner: "BatchCache", index: int):
        super().__init__()
        self.owner = owner
        self.index = index
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        k, v = self.owner.keys[self.index], self.owner.values[self.index]
        start, rows, steps = self.owner.length, key_states.shape[0], key_states.shape[-2]
        k[:rows, :, start:start + steps] = key_states
        v[:rows, :, start:start + steps] = value_states
        return k[:rows, :, :start + steps], v[:rows, :, :start + steps]

    def get_seq_length(self) -> int:
        return self.owner.length


class BatchCache:
    def __init__(self, num_layers: int, max_batch: int, max_len: int):
        self.num_layers = num_layers
        self.max_batch = max_batch
        self.max_len = max_len
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.length = 0  # columns in use
        self.pads: list[int] = []  # leading padding columns of each row
        self.cache = Cache(layers=[_BufferLayer(self, i) for i in range(num_layers)])

    @property
    def rows(self) -> int:
        return len(self.pads)

    def _allocate(self, like: torch.Tensor) -> None:
        # torch.empty leaves pages untouched until written: only what is used costs memory.
        shape = (self.max_batch, like.shape[1], self.max_len, like.shape[3])
        kw = dict(dtype=like.dtype, device=like.device)
        self.keys = [torch.empty(shape, **kw) for _ in range(self.num_layers)]
        self.values = [torch.empty(shape, **kw) for _ in range(self.num_layers)]

    def join(self, prefill) -> None:
        """Add a row from a prefilled single-sequence DynamicCache."""
        layers = prefill.layers
        if not self.keys:
            self._allocate(layers[0].keys)
        n = layers[0].keys.shape[-2]
        rows = self.rows
        if n > self.length:  # shift the running rows right to make room
            shift = n - self.length
            for buf in self.keys + self.values:
                if rows and self.length:
                    buf[:rows, :, shift:n] = buf[:rows, :, :self.length].clone()
                buf[:rows, :, :shift].zero_()
            self.pads = [p + shift for p in self.pads]
            self.length = n
        pad = self.length - n
        for i, layer in enumerate(layers):
            for buf, src in ((self.keys[i], layer.keys), (self.values[i], layer.values)):
                buf[rows, :, :pad].zero_()  # masked, but never NaN garbage (0 * NaN is NaN)
                buf[rows, :, pad:self.length] = src[0]
        self.pads.append(pad)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), then drop columns that are padding everywhere."""
        if rows != list(range(self.rows)):
            index = torch.tensor(rows, dtype=torch.long, device=self.keys[0].device)
            for buf in self.keys + self.values:
                buf[:len(rows), :, :self.length] = buf[:self.rows, :, :self.length].index_select(0, index)
            self.pads = [self.pads[r] for r in rows]
        if not self.pads:
            self.length = 0
            return
        trim = min(self.pads)
        if trim:
            for buf in self.keys + self.values:
                buf[:self.rows, :, :self.length - trim] = buf[:self.rows, :, trim:self.length].clone()
            self.length -= trim
            self.pads = [p - trim for p in self.pads]

    def attention_mask(self) -> torch.Tensor:
        """(rows, length + 1): the columns each row attends to in the next step."""
        cols = torch.arange(self.length + 1)
        return (cols[None, :] >= torch.tensor(self.pads)[:, None]).long()
