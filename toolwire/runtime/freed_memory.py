"""Handing memory freed while a service loaded back to the system.

Loading a model's tokenizer, its config and the grammar library frees tens of megabytes of
temporaries (transformers' tokenizer conversion, parsed JSON, import-time objects), and glibc's
malloc keeps freed chunks mapped for reuse: the template service held 27 MB it no longer used
after its start, the extractor 29, each grammar worker 14 (bench/memory.py, docs/operations.md
"Memory"). A service calls `return_freed_memory` once, when it is ready; what its requests then
free, malloc reuses for the next ones.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def return_freed_memory() -> bool:
    """Release the free pages of every malloc arena (not just the top of the heap, which is
    all malloc gives back by itself); True where the C library could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
