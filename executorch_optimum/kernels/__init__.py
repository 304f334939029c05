"""Loads our C++ op libraries: PyTorch ops for eager/export, ExecuTorch kernels for runtime.

Both loaders are idempotent; loading a library twice into the ExecuTorch runtime would abort
the process (duplicate kernel registration), so each is loaded at most once.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

_HERE = Path(__file__).resolve().parent
TORCH_OPS_LIBRARY = "libeo_torch_ops.so"
ET_KERNELS_LIBRARY = "libeo_et_kernels.so"


def _library_path(name: str) -> Path:
    for candidate in (Path(__file__).parent / name, _HERE / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{name} not found next to {__file__}; build it with "
        "`bazel build //executorch_optimum/kernels:all` or depend on "
        "//executorch_optimum/kernels:kernels_py"
    )


@functools.cache
def load_torch_ops() -> Path:
    """Registers the `torch.ops.eo.*` operators (and their Meta kernels) with PyTorch."""
    import torch

    path = _library_path(TORCH_OPS_LIBRARY)
    torch.ops.load_library(str(path))
    return path


@functools.cache
def load_et_kernels() -> Path:
    """Registers our out-variant kernels with the ExecuTorch runtime in this process."""
    # The runtime's own library must be loaded first so our kernels join its registry.
    from executorch.extension.pybindings import portable_lib  # noqa: F401

    path = _library_path(ET_KERNELS_LIBRARY)
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    return path
