"""Load a .pte, prefill and decode in the ExecuTorch runtime, and measure tokens/s.

Names are imported on first use, so `runtime.threads.single_thread_openmp()` can run before
anything imports torch.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "GenerationResult": "generator",
    "GenerationStats": "generator",
    "Generator": "generator",
    "load_executorch_op_libraries": "generator",
    "ProgramMetadata": "metadata",
    "read_metadata": "metadata",
    "greedy_token": "sampling",
    "sample_next_token": "sampling",
    "configure_threads": "threads",
    "single_thread_openmp": "threads",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
