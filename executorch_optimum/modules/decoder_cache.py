"""The text decoder's state, shared by every task: our KV cache, our attention, the context bound.

`DecoderCache` builds the cache for the model's text config, points the model's attention at
ExecuTorch's (or our) kernels, holds the cache buffers as submodules so they become the
exported program's mutable state, and checks the lengths the runner metadata promises.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from executorch_optimum.caches import ETCustomHybridCache, ETCustomStaticCache, make_cache
from executorch_optimum.sdpa import make_attention, register_attention


def _set_attention(model: PreTrainedModel, name: str) -> None:
    # Set on the configs directly: transformers' setter vets names against its own
    # implementations (and refuses some architectures), while the modelling code only
    # looks the name up in the AttentionInterface registry at call time.
    for config in {id(c): c for c in (model.config, model.config.get_text_config(decoder=True))}.values():
        config._attn_implementation = name


def _default_context(model: PreTrainedModel) -> int:
    text = model.config.get_text_config(decoder=True)
    return int(min(getattr(text, "max_position_embeddings", 2048) or 2048, 2048))


class DecoderCache(torch.nn.Module):
    """Our caches + attention installed on `model`; `begin(cache_position, tokens)` per call.

    Raises NotImplementedError without custom KV caches, ValueError for lengths that do not
    fit (`1 <= max_seq_len <= max_context_len`) and for a `kv_cache_dtype` other than the
    model's without `native_kernels` (ExecuTorch's cache ops do not convert).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        max_seq_len: int,
        max_context_len: int | None,
        use_custom_kv_cache: bool = True,
        use_custom_sdpa: bool = True,
        native_kernels: bool = False,
        kv_cache_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not use_custom_kv_cache:
            raise NotImplementedError(
                "only ExecuTorch custom KV caches are supported (use_custom_kv_cache=True): "
                "they are what makes cache updates in place"
            )
        max_context_len = max_context_len or _default_context(model)
        if not 1 <= max_seq_len <= max_context_len:
            raise ValueError(
                f"max_seq_len must be in [1, max_context_len={max_context_len}], got {max_seq_len}"
            )
        self.max_seq_len = max_seq_len
        self.max_context_len = max_context_len
        self.use_custom_sdpa = use_custom_sdpa
        dtype = next(model.parameters()).dtype
        if kv_cache_dtype not in (None, dtype) and not native_kernels:
            raise ValueError(
                f"a {kv_cache_dtype} KV cache under a {dtype} model needs native_kernels: "
                "ExecuTorch's cache and attention ops take caches of the model's dtype only"
            )
        self.kv_cache_dtype = kv_cache_dtype or dtype
        text_config = model.config.get_text_config(decoder=True)
        self.cache: ETCustomStaticCache | ETCustomHybridCache = make_cache(
            text_config, 1, max_context_len, max_seq_len, self.kv_cache_dtype, native_kernels=native_kernels
        )
        self.storage = torch.nn.ModuleList(self.cache.storage_modules())
        attention = make_attention(self.cache, use_custom_sdpa, native_kernels=native_kernels)
        _set_attention(model, register_attention(attention))

    def begin(self, cache_position: torch.Tensor, tokens: int) -> None:
        """Positions of this call into the cache; the call must fit the context."""
        self.cache.set_cache_position(cache_position)
        end = self.cache.positions.start() + tokens
        torch._check(
            end <= self.max_context_len,
            lambda: f"context full: positions up to {end} exceed max_context_len={self.max_context_len}",
        )

    def runner_metadata(self) -> dict[str, int | bool]:
        """The cache's part of the runner metadata (see utils.constant_methods)."""
        metadata: dict[str, int | bool] = {
            "get_max_seq_len": self.max_seq_len,
            "get_max_context_len": self.max_context_len,
            "use_kv_cache": True,
            "use_sdpa_with_kv_cache": self.use_custom_sdpa,
            "enable_dynamic_shape": self.max_seq_len > 1,
        }
        windows = [
            layer.sliding_window for layer in self.cache.layers if getattr(layer, "sliding_window", None)
        ]
        if windows:
            metadata["sliding_window"] = min(windows)
        return metadata
