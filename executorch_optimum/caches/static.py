"""ETCustomStaticCache and ETCustomHybridCache: Hugging Face caches on ExecuTorch storage."""

from __future__ import annotations

import torch
from transformers import PretrainedConfig, StaticCache
from transformers.cache_utils import Cache, get_layer_types_and_kwargs

from executorch_optimum.caches.layers import EORingLayer, ETFullLayer, ETRingLayer
from executorch_optimum.caches.positions import CallPositions

_SLIDING_TYPES = ("sliding_attention", "hybrid_sliding")


def _attention_shape(config: PretrainedConfig) -> tuple[int, int]:
    text = config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return kv_heads, head_dim


def _check_device(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError("ExecuTorch caches live on the CPU")


def layer_windows(config: PretrainedConfig) -> list[int | None]:
    """Per layer: its sliding window, or None for full attention (transformers' own reading)."""
    layer_types, per_layer_kwargs = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    windows: list[int | None] = []
    for layer_type, kwargs in zip(layer_types, per_layer_kwargs, strict=True):
        if layer_type in _SLIDING_TYPES:
            windows.append(int(kwargs["sliding_window"]))
        elif layer_type == "full_attention":
            windows.append(None)
        else:
            raise NotImplementedError(f"layer type '{layer_type}' is not supported by the ExecuTorch caches")
    return windows


class ETCacheBase(StaticCache):
    """Shared constructor: builds our layers instead of StaticCache's, keeps the API."""

    def __init__(self, layers: list[ETFullLayer], positions: CallPositions, max_cache_len: int) -> None:
        Cache.__init__(self, layers=layers)
        self.positions = positions
        self.max_cache_len = max_cache_len

    def set_cache_position(self, cache_position: torch.Tensor) -> None:
        """Positions of the tokens of the next forward call ([S] int64)."""
        self.positions.set(cache_position)

    def get_layer_cache(self, layer_idx: int) -> ETFullLayer:
        """The storage of layer `layer_idx` (traceable: plain attribute access)."""
        return self.layers[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.positions.tokens_seen()

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.max_cache_len

    def storage_modules(self) -> list[torch.nn.Module]:
        """The nn.Modules whose buffers hold the cache (register them on the exported module)."""
        return [layer.storage for layer in self.layers]


class ETCustomStaticCache(ETCacheBase):
    """Every layer keeps the whole context (`max_cache_len` slots) in a CustomKVCache."""

    def __init__(
        self,
        config: PretrainedConfig,
        max_batch_size: int,
        max_cache_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        _check_device(device)
        kv_heads, head_dim = _attention_shape(config)
        positions = CallPositions()
        layers = [
            ETFullLayer(positions, max_batch_size, max_cache_len, kv_heads, head_dim, dtype)
            for _ in layer_windows(config)
        ]
        super().__init__(layers, positions, max_cache_len)


class ETCustomHybridCache(ETCacheBase):
    """Full layers keep the whole context; sliding layers keep a ring of window + chunk slots.

    A sliding layer whose window covers the whole context gets a full layer: a ring would
    hold the same keys, with a mask to build on every call. `native_kernels` puts sliding
    layers on our C++ ring kernels (exact-size ring, no mask) instead of ExecuTorch's ring.
    """

    def __init__(
        self,
        config: PretrainedConfig,
        max_batch_size: int,
        max_cache_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        max_chunk: int | None = None,
        native_kernels: bool = False,
    ) -> None:
        _check_device(device)
        kv_heads, head_dim = _attention_shape(config)
        ring_class = EORingLayer if native_kernels else ETRingLayer
        max_chunk = max_chunk or max_cache_len
        if not 1 <= max_chunk <= max_cache_len:
            raise ValueError(f"max_chunk must be in [1, {max_cache_len}], got {max_chunk}")
        positions = CallPositions()
        layers: list[ETFullLayer] = []
        for window in layer_windows(config):
            if window is None or window >= max_cache_len:
                layers.append(
                    ETFullLayer(positions, max_batch_size, max_cache_len, kv_heads, head_dim, dtype)
                )
            else:
                layers.append(
                    ring_class(positions, max_batch_size, window, max_chunk, kv_heads, head_dim, dtype)
                )
        super().__init__(layers, positions, max_cache_len)
        self.max_chunk = max_chunk


def has_sliding_layers(config: PretrainedConfig, max_cache_len: int) -> bool:
    """Whether any layer's window is shorter than the context (so it needs a ring)."""
    return any(w is not None and w < max_cache_len for w in layer_windows(config))


def make_cache(
    config: PretrainedConfig,
    max_batch_size: int,
    max_cache_len: int,
    max_chunk: int,
    dtype: torch.dtype,
    native_kernels: bool = False,
) -> ETCustomStaticCache | ETCustomHybridCache:
    """The right cache for `config`: hybrid when some layer slides within the context."""
    if has_sliding_layers(config, max_cache_len):
        return ETCustomHybridCache(
            config,
            max_batch_size,
            max_cache_len,
            dtype=dtype,
            max_chunk=max_chunk,
            native_kernels=native_kernels,
        )
    return ETCustomStaticCache(config, max_batch_size, max_cache_len, dtype=dtype)
