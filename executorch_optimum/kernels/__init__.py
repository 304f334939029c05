"""Our C++ ops: loaders for the PyTorch and ExecuTorch libraries, and typed entry points.

Both loaders are idempotent; loading a library twice into the ExecuTorch runtime would abort
the process (duplicate kernel registration), so each is loaded at most once.

Ops (schemas in core/schemas.h; layout [batch, seq, heads, head_dim], float32):

- ``eo::ring_update_cache(value [B,S,H,D], cache(a!) [B,C,H,D], start_pos) -> int64 [1]`` writes
  row i to slot ``(start_pos + i) % C`` (only the last C rows when S > C) and returns
  ``start_pos + S``. Slot positions are not stored: a ring written with positions 0, 1, 2, ...
  in order (any chunking; start_pos 0 restarts) holds exactly ``[max(0, end - C), end)``.
- ``eo::ring_sdpa(query [B,S,Hq,D], k_cache, v_cache [B,C,Hkv,D], start_pos, window, scale,
  softcap) -> [B,S,Hq,D]``: query i (position p = start_pos + i) attends to the keys at positions
  q with ``max(0, end - C, p - window + 1) <= q <= p`` (window <= 0: no window limit), after
  this call's update. GQA maps query head h to kv head ``h // (Hq // Hkv)``; softcap > 0 applies
  ``softcap * tanh(score / softcap)`` to the scaled scores.

- ``eo::rope_ring_sdpa(query, cos, sin, k_cache, v_cache, start_pos, window, scale, softcap)``:
  ring_sdpa of the query rotated first the way transformers does (``q * cos + rotate_half(q) *
  sin``, cos/sin ``[1 or B, S, D]``), so exported programs need no rotary operators for queries.
- ``eo::rope_kv_update(key, value, cos, sin, k_cache(a!), v_cache(b!), start_pos) -> int64 [1]``:
  ring_update_cache of the key rotated the same way and of the value, in one call (no rotary
  operators for keys either).
- ``eo::norm_rope_ring_sdpa`` / ``eo::norm_rope_kv_update``: the same with trailing
  ``norm_weight [D], norm_eps``: each row is first normalised,
  ``norm_weight * (x * rsqrt(mean(x^2) + norm_eps))`` (Qwen3's q_norm / k_norm).

Each has an ``.out`` overload (the ExecuTorch kernel). With C = max context and window <= 0
(or >= C), ring_sdpa over a ring that never wraps is exact causal attention (full layers).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_HERE = Path(__file__).resolve().parent
TORCH_OPS_LIBRARY = "libeo_torch_ops.so"
ET_KERNELS_LIBRARY = "libeo_et_kernels.so"
# `window` value for full causal attention (no window limit); any window >= C acts the same.
NO_WINDOW = 0


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


def build_info() -> dict[str, Any]:
    """Compiler, flags, op schemas and threading of the kernel libraries (pybind11 module)."""
    from executorch_optimum.kernels import _eo_kernels_info

    return dict(_eo_kernels_info.build_info())


def ring_update_cache(value: torch.Tensor, cache: torch.Tensor, start_pos: int) -> torch.Tensor:
    """Writes value [B, S, H, D] into the ring cache [B, C, H, D] in place; returns int64 [start_pos + S].

    ``start_pos`` may be a SymInt (e.g. ``input_pos[0].item()`` under torch.export).
    """
    import torch

    load_torch_ops()
    return torch.ops.eo.ring_update_cache(value, cache, start_pos)


def ring_sdpa(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    start_pos: int,
    window: int,
    scale: float,
    softcap: float = 0.0,
) -> torch.Tensor:
    """Sliding-window attention of query [B, S, Hq, D] over ring caches [B, C, Hkv, D].

    Call after ring_update_cache of this step's keys and values (same start_pos). Returns
    [B, S, Hq, D] contiguous. ``window <= 0`` (NO_WINDOW) means full causal attention over what
    the ring holds.
    """
    import torch

    load_torch_ops()
    return torch.ops.eo.ring_sdpa(
        query, k_cache, v_cache, start_pos, int(window), float(scale), float(softcap)
    )
