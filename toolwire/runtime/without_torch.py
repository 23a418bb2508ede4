"""Keeping torch out of a process that never runs the torch step.

torch's import is 185 MB of resident memory, and on a CPU deployment only the torch step uses
it. Three libraries import it anyway when it is installed: tvm-ffi (xgrammar's binding layer)
at its own import, transformers' tokenizers, and xgrammar's Python matcher
(toolwire/constraints/xgrammar_core.py loads xgrammar without that one). A process that says
so here before it imports them gets `ImportError` for torch instead, which each of them
handles as "torch is not installed"; transformers then keeps to tokenizers and configs, which
is all these processes ask of it.
"""

from __future__ import annotations

import os
import sys


def keep_torch_out() -> bool:
    """From now on `import torch` fails in this process; False where torch is already loaded
    (a test session, or a process that runs the torch step), and nothing changes."""
    if sys.modules.get("torch") is not None:
        return False
    sys.modules["torch"] = None  # type: ignore[assignment]  # the import system's "not here"
    # transformers says once, at import, that it found no torch: this process knows.
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    return True


def torch_kept_out() -> bool:
    return "torch" in sys.modules and sys.modules["torch"] is None


def torch_loaded() -> bool:
    return sys.modules.get("torch") is not None
