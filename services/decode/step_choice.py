"""Which step the batch engine runs (`--step auto|torch|ggml`), decided without torch.

The decode service decides it before it imports anything that would load torch: a process
that runs the ggml step then keeps torch out (toolwire/runtime/without_torch.py), 185 MB of
resident memory it would never use. So the rule reads only the command line and whether
llama.cpp's library opens here.

"A CPU" is the --device flag, as it always was: the torch step moves the model to the device
it is told, never to one it finds, so auto cannot pick a GPU by itself and need not ask torch
whether CUDA is there. A GPU run names its device (or --step torch).
"""

from __future__ import annotations

import logging

from toolwire.runtime.model_source import ModelSource

log = logging.getLogger("toolwire.decode")

KINDS = ("auto", "torch", "ggml")


def use_ggml(source: ModelSource, step: str, device: str) -> bool:
    """auto: ggml for a GGUF on a CPU when the library loads here; torch otherwise. --step
    ggml where it cannot run exits with why."""
    if step not in KINDS:
        raise SystemExit(f"--step {step!r}: auto, torch or ggml")
    if step == "torch":
        return False
    why_not = None
    if not source.gguf_file or source.random_preset:
        why_not = "the model is not a GGUF file"
    elif device != "cpu":
        why_not = f"device {device!r} (the ggml step runs on the CPU)"
    else:
        from .steps import ggml

        why_not = ggml.available()
    if why_not is None:
        return True
    if step == "ggml":
        raise SystemExit(f"--step ggml: {why_not}")
    if source.gguf_file and not source.random_preset:
        log.warning("torch step: %s", why_not)
    return False
