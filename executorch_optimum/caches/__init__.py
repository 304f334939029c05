"""KV caches backed by ExecuTorch's in-place cache ops: ETCustomStaticCache, ETCustomHybridCache."""

from executorch_optimum.caches.layers import EORingLayer, ETFullLayer, ETRingLayer
from executorch_optimum.caches.positions import CallPositions
from executorch_optimum.caches.static import (
    ETCacheBase,
    ETCustomHybridCache,
    ETCustomStaticCache,
    has_sliding_layers,
    layer_windows,
    make_cache,
)

__all__ = [
    "CallPositions",
    "EORingLayer",
    "ETCacheBase",
    "ETCustomHybridCache",
    "ETCustomStaticCache",
    "ETFullLayer",
    "ETRingLayer",
    "has_sliding_layers",
    "layer_windows",
    "make_cache",
]
