"""Attention functions that call ExecuTorch's custom SDPA, for full and ring-buffer caches."""

from executorch_optimum.sdpa.attention import (
    get_custom_sdpa_for_ring_kv_cache,
    make_attention,
    register_attention,
    softcapped_attention,
    visible_keys,
)

__all__ = [
    "get_custom_sdpa_for_ring_kv_cache",
    "make_attention",
    "register_attention",
    "softcapped_attention",
    "visible_keys",
]
