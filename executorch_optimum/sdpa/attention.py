"""Attention over our ExecuTorch caches, as a Hugging Face attention function.

The cache layers return their storage in [batch, capacity, kv_heads, head_dim] layout;
this function feeds it to ExecuTorch's `llama::custom_sdpa` (grouped-query aware, causal
from the start position). Sliding layers attend over a ring, with a mask derived from the
absolute position held in each slot. Logit softcapping (Gemma 2) is not something the op
can do, so those layers take an exact plain-PyTorch path instead of a silently wrong one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers llama::*)
from transformers import AttentionInterface

from executorch_optimum.caches import EORingLayer, ETCacheBase, ETFullLayer, ETRingLayer
from executorch_optimum.caches.deferred_rotary import QUERY_ROTARY

AttentionFn = Callable[..., tuple[torch.Tensor, None]]
_names = itertools.count()


def visible_keys(layer: ETFullLayer, query_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Bool [S, capacity]: query p sees the slot holding position q iff q <= p, p - q < window."""
    key_pos = layer.key_positions().view(1, -1)
    distance = query_pos.view(-1, 1) - key_pos
    visible = (key_pos >= 0) & (distance >= 0)
    if window is not None:
        visible = visible & (distance < window)
    return visible


def _additive(visible: torch.Tensor) -> torch.Tensor:
    return torch.where(visible, torch.zeros((), dtype=torch.float32), torch.full((), float("-inf")))


def _layer_window(layer: ETFullLayer, sliding_window: int | None) -> int | None:
    """The window this layer must apply, checked against what the model asked for."""
    if isinstance(layer, ETRingLayer | EORingLayer):
        if sliding_window is not None and sliding_window != layer.sliding_window:
            raise ValueError(
                f"model asks for window {sliding_window}, the ring cache holds window {layer.sliding_window}"
            )
        return layer.sliding_window
    if sliding_window is not None and sliding_window < layer.max_cache_len:
        return sliding_window
    return None


def softcapped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    visible: torch.Tensor,
    scale: float,
    softcap: float | None,
) -> torch.Tensor:
    """Exact attention in plain ops: q [B,S,H,D], k/v [B,C,Hkv,D] -> [B,S,H,D]."""
    batch, seq_len, heads, head_dim = query.shape
    kv_heads = key.shape[2]
    grouped = query.reshape(batch, seq_len, kv_heads, heads // kv_heads, head_dim)
    scores = torch.einsum("bskgd,bckd->bkgsc", grouped.float(), key.float()) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores + _additive(visible)
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bkgsc,bckd->bskgd", probs, value.float())
    return out.reshape(batch, seq_len, heads, head_dim).to(query.dtype)


def make_attention(
    cache: ETCacheBase, use_custom_sdpa: bool = True, native_kernels: bool = False
) -> AttentionFn:
    """The attention function for a model running on `cache` (custom SDPA, ring aware).

    `native_kernels` sends every layer to our `eo::ring_sdpa` (window, GQA, scale and softcap in
    one kernel, no mask tensor; it reads a full layer's `llama::update_cache` storage, slot =
    position, as a ring that never wraps); ring layers of our own kind (EORingLayer) always
    take it.
    """

    def attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        sliding_window: int | None = None,
        softcap: float | None = None,
        **kwargs: object,
    ) -> tuple[torch.Tensor, None]:
        if dropout:
            raise ValueError("attention dropout is not supported in exported programs (call model.eval())")
        layer = cache.get_layer_cache(module.layer_idx)
        head_dim = query.shape[-1]
        scale = scaling if scaling is not None else head_dim**-0.5
        window = _layer_window(layer, sliding_window)
        q = query.transpose(1, 2)  # [B, S, H, D]
        positions = cache.positions.tensor
        query_rotary = QUERY_ROTARY.take()  # the query is unrotated when this is set
        if isinstance(layer, EORingLayer) or native_kernels:
            from executorch_optimum.kernels import NO_WINDOW, load_torch_ops

            load_torch_ops()
            start = cache.positions.start()
            limit = NO_WINDOW if window is None else window
            cap = float(softcap or 0.0)
            if query_rotary is not None:
                op, norm_args = query_rotary.op("rope_ring_sdpa")
                out = op(
                    q, query_rotary.cos, query_rotary.sin, key, value, start, limit, scale, cap, *norm_args
                )
                return out, None
            return torch.ops.eo.ring_sdpa(q, key, value, start, limit, scale, cap), None
        if query_rotary is not None:
            raise RuntimeError("this layer's attention cannot rotate its query (only eo::rope_ring_sdpa can)")
        if softcap or not use_custom_sdpa:
            visible = visible_keys(layer, positions, window)
            return softcapped_attention(q, key, value, visible, scale, softcap), None
        start = cache.positions.start()
        if window is None and not isinstance(layer, ETRingLayer):
            out = torch.ops.llama.custom_sdpa(q, key, value, start, None, 0.0, True, scale)
        else:
            mask = _additive(visible_keys(layer, positions, window))
            out = torch.ops.llama.custom_sdpa(q, key, value, start, mask, 0.0, False, scale)
        return out, None

    return attention


def register_attention(fn: AttentionFn) -> str:
    """Registers `fn` with transformers under a fresh name and returns that name.

    No mask function is registered under the name, so transformers builds no mask for it:
    the op (or our ring mask) decides what each query sees.
    """
    name = f"executorch_custom_sdpa_{next(_names)}"
    AttentionInterface.register(name, fn)
    return name


def get_custom_sdpa_for_ring_kv_cache(exportable_module: torch.nn.Module) -> AttentionFn:
    """Attention for a module whose cache may hold ring-buffer (sliding) layers."""
    cache = getattr(exportable_module, "cache", None)
    if not isinstance(cache, ETCacheBase):
        raise TypeError(
            "expected an exportable module with an ETCustomStaticCache/ETCustomHybridCache `.cache`"
        )
    return make_attention(cache, use_custom_sdpa=True)
