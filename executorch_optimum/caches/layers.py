"""Cache layers over ExecuTorch's CustomKVCache / CustomRingKVCache storage.

Storage is [batch, capacity, kv_heads, head_dim] (sequence on dim 1, the layout of
ExecuTorch's `llama::update_cache` and `llama::custom_sdpa`). `update` writes in place
with ExecuTorch's cache ops and returns the storage itself, untransposed: our attention
functions consume that layout directly, so no copy of the cache enters the graph.
"""

from __future__ import annotations

import torch
from executorch.examples.models.llama.source_transformation.custom_kv_cache import (
    CustomKVCache,
    CustomRingKVCache,
)
from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers llama::*)
from transformers.cache_utils import CacheLayerMixin

from executorch_optimum.caches.deferred_rotary import KEY_ROTARY
from executorch_optimum.caches.positions import CallPositions


def _to_storage_layout(states: torch.Tensor) -> torch.Tensor:
    # Hugging Face hands [B, H, S, D]; storage is [B, S, H, D].
    return states.transpose(1, 2)


class ETFullLayer(CacheLayerMixin):
    """A full-attention layer: one slot per position up to the whole context."""

    is_sliding = False
    is_compileable = True

    def __init__(
        self,
        positions: CallPositions,
        batch_size: int,
        max_cache_len: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.positions = positions
        self.max_cache_len = max_cache_len
        self.storage = CustomKVCache(batch_size, max_cache_len, num_kv_heads, head_dim, dtype=dtype)
        self.keys, self.values = self.storage.k_cache, self.storage.v_cache
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Storage is allocated up front (export needs it); nothing to do."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.positions.start()
        seq_len = key_states.shape[-2]
        torch._check(start + seq_len <= self.max_cache_len)
        if not _write_rotated_keys(self.storage, key_states, value_states, start):
            # ExecuTorch's op copies rows as they are; ours (a ring that never wraps here) also
            # rounds them into a narrower cache.
            update = torch.ops.llama.update_cache
            if self.storage.k_cache.dtype != key_states.dtype:
                update = _eo_ops().ring_update_cache
            update(_to_storage_layout(key_states), self.storage.k_cache, start)
            update(_to_storage_layout(value_states), self.storage.v_cache, start)
        return self.storage.k_cache, self.storage.v_cache

    def key_positions(self) -> torch.Tensor:
        """Absolute position held by each slot (slot i holds position i)."""
        return torch.arange(self.max_cache_len, dtype=torch.long)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.max_cache_len, 0

    def get_seq_length(self) -> int:
        return self.positions.tokens_seen()

    def get_max_length(self) -> int:
        return self.max_cache_len

    def reset(self) -> None:
        self.storage.k_cache.zero_()
        self.storage.v_cache.zero_()


def _eo_ops() -> object:
    """torch.ops.eo, loaded on first use."""
    from executorch_optimum import kernels

    kernels.load_torch_ops()
    return torch.ops.eo


def _write_rotated_keys(
    storage: torch.nn.Module, key_states: torch.Tensor, value_states: torch.Tensor, start: torch.SymInt | int
) -> bool:
    """Writes keys and values with eo::rope_kv_update when the keys came unrotated (their
    tables in KEY_ROTARY, see modules/rotary.py); False when the keys are rotated already.

    A full layer's storage is a ring that never wraps (slot = position), so the op serves both
    kinds of layer.
    """
    tables = KEY_ROTARY.take()
    if tables is None:
        return False
    _eo_ops()
    key, value = _to_storage_layout(key_states), _to_storage_layout(value_states)
    op, norm_args = tables.op("rope_kv_update")
    op(key, value, tables.cos, tables.sin, storage.k_cache, storage.v_cache, start, *norm_args)
    return True


def _init_ring(
    layer: ETFullLayer,
    positions: CallPositions,
    sliding_window: int,
    max_chunk: int,
    storage: torch.nn.Module,
) -> None:
    """Common state of ring layers; the capacity is whatever the storage holds."""
    CacheLayerMixin.__init__(layer)
    layer.positions = positions
    layer.sliding_window = sliding_window
    layer.max_chunk = max_chunk
    layer.storage = storage
    layer.capacity = layer.max_cache_len = storage.k_cache.shape[1]
    layer.keys, layer.values = storage.k_cache, storage.v_cache
    layer.is_initialized = True


class ETRingLayer(ETFullLayer):
    """A sliding-window layer: a ring buffer that holds the window plus one call's tokens.

    A query at position p needs keys (p - window, p]. A call writes `max_chunk` new rows
    before attending, so the ring keeps `window + max_chunk - 1` slots: the oldest key
    the first query of a full chunk still needs has not been overwritten.
    """

    is_sliding = True

    def __init__(
        self,
        positions: CallPositions,
        batch_size: int,
        sliding_window: int,
        max_chunk: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
    ) -> None:
        needed = sliding_window + max_chunk - 1
        # CustomRingKVCache allocates twice the size it is given.
        storage = CustomRingKVCache(batch_size, (needed + 1) // 2, num_kv_heads, head_dim, dtype=dtype)
        _init_ring(self, positions, sliding_window, max_chunk, storage)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq_len = key_states.shape[-2]
        torch._check(seq_len <= self.max_chunk)
        if KEY_ROTARY.pending is not None:
            raise RuntimeError(
                "ExecuTorch's ring cache cannot rotate keys: export sliding layers with native_kernels"
            )
        manager = self.storage.cache_positions_manager
        indices = manager.calculate_positions_and_update_indices(self.positions.tensor, seq_len).unsqueeze(0)
        start = self.positions.start()
        torch.ops.llama.update_cache_with_indices(
            _to_storage_layout(key_states), self.storage.k_cache, start, indices
        )
        torch.ops.llama.update_cache_with_indices(
            _to_storage_layout(value_states), self.storage.v_cache, start, indices
        )
        return self.storage.k_cache, self.storage.v_cache

    def key_positions(self) -> torch.Tensor:
        """Absolute position held by each slot after this call's update (-1 = empty)."""
        return self.storage.cache_positions_manager.cache_positions

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.capacity, 0

    def reset(self) -> None:
        super().reset()
        self.storage.cache_positions_manager.cache_positions.zero_()


class _RingStorage(torch.nn.Module):
    """Plain K/V buffers for our native ring kernels (slot positions are derived, not stored)."""

    def __init__(
        self, batch_size: int, capacity: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        shape = (batch_size, capacity, num_kv_heads, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype))
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype))


class EORingLayer(ETFullLayer):
    """A sliding-window layer on our native kernels: `eo::ring_update_cache` + `eo::ring_sdpa`.

    Exactly `window + max_chunk - 1` slots (ExecuTorch's ring doubles its size), no
    per-slot position buffer and no mask tensor: the kernel derives what each query sees.
    """

    is_sliding = True

    def __init__(
        self,
        positions: CallPositions,
        batch_size: int,
        sliding_window: int,
        max_chunk: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
    ) -> None:
        from executorch_optimum import kernels

        kernels.load_torch_ops()
        capacity = sliding_window + max_chunk - 1
        storage = _RingStorage(batch_size, capacity, num_kv_heads, head_dim, dtype)
        _init_ring(self, positions, sliding_window, max_chunk, storage)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        torch._check(key_states.shape[-2] <= self.max_chunk)
        start = self.positions.start()
        if not _write_rotated_keys(self.storage, key_states, value_states, start):
            torch.ops.eo.ring_update_cache(_to_storage_layout(key_states), self.storage.k_cache, start)
            torch.ops.eo.ring_update_cache(_to_storage_layout(value_states), self.storage.v_cache, start)
        return self.storage.k_cache, self.storage.v_cache

    def key_positions(self) -> torch.Tensor:
        """Absolute position in each slot, derived as the kernel does (-1 = not yet written)."""
        end = self.positions.tensor[-1] + 1
        slots = torch.arange(self.capacity, dtype=torch.long)
        last_lap = end - 1 - torch.remainder(end - 1 - slots, self.capacity)
        return torch.where(last_lap >= 0, last_lap, torch.full((), -1, dtype=torch.long))

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.capacity, 0
