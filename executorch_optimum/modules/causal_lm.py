"""The decoder-only exportable module: what torch.export sees for text generation.

`forward(input_ids [1, S], cache_position [S]) -> logits` is the method ExecuTorch's stock
text runner calls; S is dynamic up to `max_seq_len` (the most tokens one call takes), while
the caches hold `max_context_len` tokens. The Hugging Face model keeps its own code; only
its cache and attention are ours.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from executorch_optimum.caches import ETCustomHybridCache, ETCustomStaticCache, make_cache
from executorch_optimum.modules.rotary import linear_rotate_half
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


class CausalLMExportableModule(torch.nn.Module):
    """Wraps a causal LM with ExecuTorch caches and attention, ready for torch.export.

    Args:
        model: a Hugging Face causal LM in eval mode (it is modified: keep a copy if the
            eager model is still needed).
        max_seq_len: most tokens one forward call accepts (prefill chunk size).
        max_context_len: tokens the caches hold (prompt + generation).
        use_custom_sdpa: ExecuTorch's fused SDPA op; False uses plain PyTorch attention.
        last_logits_only: return logits of the last position only ([1, 1, V]), so a
            prefill of N tokens computes one row of the vocabulary projection, not N.
        native_kernels: sliding-window and softcapped attention on our C++ kernels
            (`eo::ring_update_cache`, `eo::ring_sdpa`); the runtime must load
            libeo_et_kernels.so (executorch_optimum.kernels.load_et_kernels()).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        max_seq_len: int = 128,
        max_context_len: int | None = None,
        use_custom_kv_cache: bool = True,
        use_custom_sdpa: bool = True,
        last_logits_only: bool = True,
        native_kernels: bool = False,
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
        self.model = model.eval()
        self.max_seq_len = max_seq_len
        self.max_context_len = max_context_len
        self.last_logits_only = last_logits_only
        self.use_custom_sdpa = use_custom_sdpa
        dtype = next(model.parameters()).dtype
        self.cache: ETCustomStaticCache | ETCustomHybridCache = make_cache(
            model.config, 1, max_context_len, max_seq_len, dtype, native_kernels=native_kernels
        )
        # Registered so the cache buffers become mutable state of the exported program.
        self.cache_storage = torch.nn.ModuleList(self.cache.storage_modules())
        self.native_kernels = native_kernels
        attention = make_attention(self.cache, use_custom_sdpa, native_kernels=native_kernels)
        _set_attention(model, register_attention(attention))

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        self.cache.set_cache_position(cache_position)
        end = self.cache.positions.start() + input_ids.shape[1]
        torch._check(
            end <= self.max_context_len,
            lambda: f"context full: positions up to {end} exceed max_context_len={self.max_context_len}",
        )
        outputs = self.model(
            input_ids=input_ids,
            position_ids=cache_position.unsqueeze(0),
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1 if self.last_logits_only else 0,
        )
        return outputs.logits

    def metadata(self) -> dict[str, int | bool | float | str | list[int]]:
        """What ExecuTorch's text runner reads from the program (constant methods)."""
        from executorch_optimum.utils import save_config_to_constant_methods

        windows = [
            layer.sliding_window for layer in self.cache.layers if getattr(layer, "sliding_window", None)
        ]
        overrides: dict[str, int | bool] = {
            "get_max_seq_len": self.max_seq_len,
            "get_max_context_len": self.max_context_len,
            "use_kv_cache": True,
            "use_sdpa_with_kv_cache": self.use_custom_sdpa,
            "enable_dynamic_shape": self.max_seq_len > 1,
        }
        if windows:
            overrides["sliding_window"] = min(windows)
        return save_config_to_constant_methods(
            self.model.config, getattr(self.model, "generation_config", None), **overrides
        )

    def example_inputs(self, seq_len: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        seq_len = min(seq_len, self.max_seq_len)
        return torch.zeros((1, seq_len), dtype=torch.long), torch.arange(seq_len, dtype=torch.long)

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        """{"forward": program} with a dynamic sequence length in [1, max_seq_len]."""
        example = self.example_inputs()
        dynamic_shapes = None
        if self.max_seq_len > 1:
            seq_len = torch.export.Dim("seq_len", min=1, max=self.max_seq_len)
            dynamic_shapes = {"input_ids": {1: seq_len}, "cache_position": {0: seq_len}}
        with torch.no_grad(), linear_rotate_half(self.model):
            program = torch.export.export(self, example, dynamic_shapes=dynamic_shapes, strict=False)
        return {"forward": program}
