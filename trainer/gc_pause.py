"""Python's cyclic garbage collector paused while a process imports its libraries and builds its models."""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Imports (torch, transformers, vLLM) and model builds allocate millions of objects that live as long as
    the process, and every full collection meanwhile walks all of them again; they make few cycles to free.
    The collector's state is restored on exit (it stays off if it was off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
