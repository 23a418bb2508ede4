"""A step: one forward pass of a model over a slot-indexed KV cache.

The batch engine's scheduler (services/decode/scheduler.py) decides what each step computes;
a step only computes it. Three steps run the same contract over three libraries:

- `ggml.GgmlStep`: llama.cpp's kernels through ctypes, the CPU default for a GGUF;
- `torch_llama.TorchLlamaStep`: a Llama-family forward in plain torch (CPU or GPU);
- `hf.TransformersStep`: transformers' own forward, for any other architecture.

A slot holds one sequence's keys and values. The scheduler names slots, never tensors, so a
step may keep its cache wherever its library wants it.

Logits come back in the step's own library: a numpy array from the ggml step, which runs in a
process without torch (services/decode/step_choice.py), a tensor from the torch steps; the
scheduler samples each in its kind (sampling.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class Span:
    """New tokens for one cache slot, starting at position `start` of that slot."""

    slot: int
    tokens: list[int]
    start: int
    # Logits for every token of the span, not the last only: a decode row with a draft to
    # verify (services/decode/drafts.py). Only a step that `verifies_drafts` is given one.
    every_row: bool = False


class Step(Protocol):
    # The fewest prompt tokens a step recomputes after reusing a cached prefix: a step whose
    # prefill and decode kernels round differently needs a few, so reuse does not change output.
    min_prefill: int
    library: str  # what computes the forward pass, for the service's startup line
    # Whether forward runs torch ops: the scheduler then runs under torch.inference_mode.
    uses_torch: bool
    verifies_drafts: bool  # forward() honours Span.every_row

    @property
    def kv_tokens(self) -> int | None:
        """The positions of the KV pool all slots share; None: each slot has its own room."""
        ...

    def forward(self, decode: list[Span], prefill: list[Span]) -> torch.Tensor | np.ndarray:
        """Logits for the last token of each span (every token of an `every_row` span), in span
        order, decode spans first."""
        ...

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Slot `dst` starts with the first `length` positions of slot `src`."""
        ...

    def move(self, src: int, dst: int, length: int) -> None:
        """Slot `src`'s first `length` positions now live in slot `dst`; `src` is free."""
        ...

    def save(self, slot: int, length: int) -> tuple[Any, int]:
        """A copy of the slot's first `length` positions (for the prefix cache) and its size in bytes."""
        ...

    def load(self, slot: int, saved: Any, length: int) -> None:
        """Put what `save` returned back into `slot`."""
        ...

    def release(self, slot: int) -> None:
        """The slot's positions are no longer needed."""
        ...
