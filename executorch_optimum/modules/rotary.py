"""Rotary embedding in a form XNNPACK runs well, while exporting (`rotary_for_export`).

Transformers' `rotate_half` slices the last dim in two halves; XNNPACK refuses slices of
tensors with a dynamic sequence length, so every layer's rotary stays on the portable path
and splits the layer into several delegate partitions. `rotate_half(x)` equals
`x @ R.T` for a fixed signed permutation R, which XNNPACK runs as a tiny linear (exact:
each output is one input times +-1).

Transformers also applies rotary to q and k in [batch, heads, seq, dim] layout, between a
transpose out of the projections' [batch, seq, heads, dim] and our attention's and cache's
transpose back. Applied in the sequence-major layout instead (the same products, the same
bits), those transposes meet in pairs that `CancelPermutePairsPass` removes: fewer delegate
operators per layer. With our kernels (`defer_rotary`), the query and the key are handed on
unrotated: `eo::rope_ring_sdpa` rotates the query and `eo::rope_kv_update` the key as it
enters the cache (~6 operators fewer per layer for each); the tables go through
caches/deferred_rotary.py. Qwen3's per-head q_norm / k_norm, applied right before rotary, go
the same way (`deferred_head_norms`, Gemma 3's too): the ops normalise each row before
rotating it, in place of 5 XNNPACK operators for each norm. The swaps last only while the model is traced.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext

import torch

from executorch_optimum.caches.deferred_rotary import KEY_ROTARY, QUERY_ROTARY, DeferredRotary, HeadNorm


def rotate_half_matrix(dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """R with `x @ R.T == cat(-x[..., dim/2:], x[..., :dim/2])`."""
    if dim % 2:
        raise ValueError(f"rotary dim must be even, got {dim}")
    half = dim // 2
    matrix = torch.zeros(dim, dim, dtype=dtype)
    rows = torch.arange(half)
    matrix[rows, rows + half] = -1.0
    matrix[rows + half, rows] = 1.0
    return matrix


class _LinearRotateHalf:
    """Drop-in `rotate_half` reading its matrix from a buffer of `owner` per (dim, dtype).

    Looked up by name at call time: torch.export swaps a module's buffers for traced ones,
    and a tensor captured any other way becomes a lifted constant, which ExecuTorch's
    delegate re-tracing in `to_executorch` cannot resolve.
    """

    def __init__(self, original, owner: torch.nn.Module, names: dict[tuple[int, torch.dtype], str]) -> None:  # noqa: ANN001
        self.original = original
        self.owner = owner
        self.names = names

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        name = self.names.get((x.shape[-1], x.dtype))
        if name is None:
            return self.original(x)
        matrix = getattr(self.owner, name)
        # A 2-D mm with the constant as its direct weight is what XNNPACK's gemm takes (a 4-D
        # matmul decomposes into expand + bmm; F.linear adds a transpose it does not fold).
        # Reshapes name the symbolic sequence dim -1: XNNPACK infers at most one dim.
        out = torch.mm(x.reshape(-1, x.shape[-1]), matrix)
        return out.view([d if isinstance(d, int) else -1 for d in x.shape])


def _rotary_dims(model: torch.nn.Module) -> set[int]:
    """Every last-dim size `rotate_half` may see: head dims, scaled by partial rotary factors."""
    dims = set()
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is None:
            continue
        for sub in (config, *(getattr(config, n, None) for n in ("text_config", "vision_config"))):
            if sub is None:
                continue
            heads = getattr(sub, "num_attention_heads", None)
            hidden = getattr(sub, "hidden_size", None)
            head_dim = getattr(sub, "head_dim", None) or (hidden // heads if hidden and heads else None)
            if head_dim:
                factor = getattr(sub, "partial_rotary_factor", 1.0) or 1.0
                dims.update({int(head_dim), int(head_dim * factor)})
    return {d for d in dims if d > 0 and d % 2 == 0}


def _modeling_modules(model: torch.nn.Module, function: str) -> list:
    """The modelling modules of `model`'s classes that define `function`."""
    names = {type(m).__module__ for m in model.modules()}
    modules = [sys.modules[n] for n in sorted(names) if n in sys.modules]
    return [m for m in modules if callable(getattr(m, function, None))]


@contextmanager
def linear_rotate_half(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, the model's modelling code rotates with a matmul (see module doc).

    The matrices are (non-persistent) buffers of `model`, which must be, or be inside, the
    module tree being exported; they are removed again on exit.
    """
    dtypes = {p.dtype for p in model.parameters() if p.dtype.is_floating_point}
    names = {}
    for dim in sorted(_rotary_dims(model)):
        for dtype in dtypes:
            name = f"eo_rotate_half_{dim}_{str(dtype).removeprefix('torch.')}"
            # Stored transposed: rotate_half(x) = x @ R.T.
            model.register_buffer(name, rotate_half_matrix(dim, dtype).T.contiguous(), persistent=False)
            names[(dim, dtype)] = name
    patched = []
    try:
        for module in _modeling_modules(model, "rotate_half"):
            original = module.rotate_half
            module.rotate_half = _LinearRotateHalf(original, model, names)
            patched.append((module, original))
        yield
    finally:
        for module, original in reversed(patched):
            module.rotate_half = original
        for name in names.values():
            delattr(model, name)


class _SequenceMajorRotary:
    """Drop-in `apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)` that rotates q and k
    as [B, S, H, D] (cos/sin unsqueezed on dim 2) and hands back [B, H, S, D] views. With
    `defer_rotary`, q and k come back unrotated and their [B, S, D] tables go to QUERY_ROTARY
    and KEY_ROTARY."""

    def __init__(self, original: Callable, defer_rotary: bool = False) -> None:
        self.original = original
        self.signature = inspect.signature(original)
        self.defer_rotary = defer_rotary

    def __call__(self, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        params = bound.arguments
        q, k = params["q"], params["k"]
        q_norm, k_norm = QUERY_ROTARY.take_norm(), KEY_ROTARY.take_norm()
        cos, sin = params["cos"], params["sin"]
        batch_major = params["unsqueeze_dim"] == 1 and q.dim() == 4 and k.dim() == 4
        full_width = cos.dim() == 3 and cos.shape[-1] == q.shape[-1] == k.shape[-1]
        if self.defer_rotary and batch_major and full_width:
            QUERY_ROTARY.put(cos, sin, q_norm)
            KEY_ROTARY.put(cos, sin, k_norm)
            return q, k
        # Rotated here: a deferred head norm is applied first, as the model would have.
        q = q if q_norm is None else q_norm.apply(q)
        k = k if k_norm is None else k_norm.apply(k)
        params.update(q=q, k=k)
        if not batch_major:
            return self.original(*bound.args, **bound.kwargs)
        params.update(q=q.transpose(1, 2), k=k.transpose(1, 2), unsqueeze_dim=2)
        q_out, k_out = self.original(*bound.args, **bound.kwargs)
        return q_out.transpose(1, 2), k_out.transpose(1, 2)


def _takes_unsqueeze_dim(function: Callable) -> bool:
    try:
        params = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return {"q", "k", "unsqueeze_dim"} <= set(params)


# Head norm classes computing `scale * (x * rsqrt(mean(x^2, -1) + eps))` in float32: the name of
# their eps attribute, and whether `scale` is `1 + weight` (Gemma 3) rather than `weight`.
_FUSABLE_HEAD_NORMS = {
    "Qwen3RMSNorm": ("variance_epsilon", False),
    "Qwen3MoeRMSNorm": ("variance_epsilon", False),
    "Gemma3RMSNorm": ("eps", True),
}
_HEAD_NORMS = {"q_norm": QUERY_ROTARY, "k_norm": KEY_ROTARY}
_SCALE_BUFFER = "eo_head_norm_scale"


def _deferring_forward(norm: torch.nn.Module, slot: DeferredRotary, eps: float, scale: str) -> Callable:
    """The norm's forward while deferred: its input unchanged, its `scale` (the name of the
    weight or of a buffer, looked up per call: torch.export swaps both) handed to `slot`."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        slot.put_norm(HeadNorm(getattr(norm, scale), eps))
        return x

    return forward


@contextmanager
def deferred_head_norms(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, the fp32 q_norm / k_norm of `model`'s attention modules (see
    `_FUSABLE_HEAD_NORMS`) leave their input as it is and hand their scale to the rotary that
    follows them (see module doc). A `1 + weight` scale is a buffer made for the block."""
    patched = []
    try:
        for module in model.modules():
            for name, slot in _HEAD_NORMS.items():
                norm = getattr(module, name, None)
                form = _FUSABLE_HEAD_NORMS.get(type(norm).__name__)
                if (
                    form is None
                    or getattr(norm, "weight", None) is None
                    or norm.weight.dtype != torch.float32
                ):
                    continue
                eps_attribute, one_plus_weight = form
                scale = "weight"
                if one_plus_weight:
                    norm.register_buffer(_SCALE_BUFFER, 1.0 + norm.weight.detach(), persistent=False)
                    scale = _SCALE_BUFFER
                norm.forward = _deferring_forward(norm, slot, float(getattr(norm, eps_attribute)), scale)
                patched.append(norm)
        yield
    finally:
        for norm in patched:
            del norm.forward
            if hasattr(norm, _SCALE_BUFFER):
                delattr(norm, _SCALE_BUFFER)


@contextmanager
def sequence_major_rotary(model: torch.nn.Module, defer_rotary: bool = False) -> Iterator[None]:
    """Within the block, the model's `apply_rotary_pos_emb` (the transformers signature with
    `unsqueeze_dim`) rotates in [B, S, H, D] layout (see module doc). `defer_rotary`: full-width
    rotary is left to our ops (the cache update must call eo::rope_kv_update, the attention
    eo::rope_ring_sdpa)."""
    patched = []
    for deferred in (QUERY_ROTARY, KEY_ROTARY):
        deferred.clear()
    try:
        for module in _modeling_modules(model, "apply_rotary_pos_emb"):
            original = module.apply_rotary_pos_emb
            if isinstance(original, _SequenceMajorRotary) or not _takes_unsqueeze_dim(original):
                continue
            module.apply_rotary_pos_emb = _SequenceMajorRotary(original, defer_rotary)
            patched.append((module, original))
        with deferred_head_norms(model) if defer_rotary else nullcontext():
            yield
        for deferred in (KEY_ROTARY, QUERY_ROTARY):
            if deferred.take() is not None:
                raise RuntimeError(deferred.unused_message())
            if deferred.take_norm() is not None:
                raise RuntimeError(f"a {deferred.what}'s head norm was never applied: no rotary followed it")
    finally:
        for deferred in (QUERY_ROTARY, KEY_ROTARY):
            deferred.clear()
        for module, original in reversed(patched):
            module.apply_rotary_pos_emb = original


@contextmanager
def rotary_for_export(model: torch.nn.Module, defer_rotary: bool = False) -> Iterator[None]:
    """Both rewrites of this module, for tracing `model` (see module doc)."""
    with ExitStack() as stack:
        stack.enter_context(linear_rotate_half(model))
        stack.enter_context(sequence_major_rotary(model, defer_rotary))
        yield
