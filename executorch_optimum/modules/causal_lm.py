"""The decoder-only exportable module: what torch.export sees for text generation.

`forward(input_ids [1, S], cache_position [S]) -> logits` is the method ExecuTorch's stock
text runner calls; S is dynamic up to `max_seq_len` (the most tokens one call takes), while
the caches hold `max_context_len` tokens. The Hugging Face model keeps its own code; only
its cache and attention are ours.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from executorch_optimum.caches import ETCustomHybridCache, ETCustomStaticCache
from executorch_optimum.modules.decoder_cache import DecoderCache
from executorch_optimum.modules.rotary import rotary_for_export


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
        native_kernels: all attention on our C++ kernels (`eo::ring_sdpa`; sliding layers
            also `eo::ring_update_cache`); the runtime must load
            libeo_et_kernels.so (executorch_optimum.kernels.load_et_kernels()).
        kv_cache_dtype: the caches' element type; None = the model's. float16 under a float32
            model needs `native_kernels` (only our ops convert).
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
        kv_cache_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.decoder_cache = DecoderCache(
            model,
            max_seq_len,
            max_context_len,
            use_custom_kv_cache,
            use_custom_sdpa,
            native_kernels,
            kv_cache_dtype,
        )
        self.model = model.eval()
        self.max_seq_len = max_seq_len
        self.max_context_len = self.decoder_cache.max_context_len
        self.last_logits_only = last_logits_only
        self.use_custom_sdpa = use_custom_sdpa
        self.native_kernels = native_kernels
        self.cache: ETCustomStaticCache | ETCustomHybridCache = self.decoder_cache.cache

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        self.decoder_cache.begin(cache_position, input_ids.shape[1])
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

        overrides = self.decoder_cache.runner_metadata()
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
        # Our attention kernel rotates queries itself (eo::rope_ring_sdpa).
        with torch.no_grad(), rotary_for_export(self.model, defer_rotary=self.native_kernels):
            program = torch.export.export(self, example, dynamic_shapes=dynamic_shapes, strict=False)
        return {"forward": program}
