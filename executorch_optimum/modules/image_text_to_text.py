"""Image-text-to-text exportable module: three methods for ExecuTorch's stock MultimodalRunner.

The runner (executorch/extension/llm/runner, `constants.h`) looks methods up by name:

- `token_embedding(input_ids int64 [1, S]) -> embeddings [1, S, D]` (dynamic S);
- `vision_encoder(pixel_values float [1, 3, H, W]) -> image embeddings [1, T, D]`, T image
  tokens after the multimodal projector (static shape);
- `text_decoder(inputs_embeds [1, S, D], cache_position int64 [S]) -> logits [1, 1, V]`
  (dynamic S up to `max_seq_len`, our KV caches and attention).

The caller splices the image embeddings where the prompt holds image tokens (the stock
runner feeds them as their own chunk) and prefills the decoder. Attention is causal over
every position, image tokens included: Gemma 3's optional bidirectional mask over an image
block (applied by transformers only when `token_type_ids` are passed) is not reproduced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import PreTrainedModel

from executorch_optimum.modules.decoder_cache import DecoderCache
from executorch_optimum.modules.rotary import rotary_for_export
from executorch_optimum.modules.vision import ImagePreprocessing, vision_family
from executorch_optimum.utils.constant_methods import MetadataValue


class _TokenEmbedding(torch.nn.Module):
    """input ids -> the language model's (scaled) embeddings; out-of-vocabulary ids embed as 0."""

    def __init__(self, embedding: torch.nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.embedding = embedding
        self.vocab_size = vocab_size

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Placeholder ids such as Gemma 3's image token may lie past the vocabulary (transformers
        # embeds them as id 0 before the image features replace them).
        safe = torch.where(input_ids < self.vocab_size, input_ids, torch.zeros_like(input_ids))
        return self.embedding(safe)


class _TextDecoder(torch.nn.Module):
    """inputs_embeds + cache positions -> last-position logits, with our caches."""

    def __init__(
        self, language_model: torch.nn.Module, lm_head: torch.nn.Module, decoder_cache: DecoderCache
    ) -> None:
        super().__init__()
        self.language_model = language_model
        self.lm_head = lm_head
        self.decoder_cache = decoder_cache

    def forward(self, inputs_embeds: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        self.decoder_cache.begin(cache_position, inputs_embeds.shape[1])
        hidden = self.language_model(
            inputs_embeds=inputs_embeds,
            position_ids=cache_position.unsqueeze(0),
            cache=self.decoder_cache.cache,
            use_cache=True,
            return_dict=True,
        ).last_hidden_state
        return self.lm_head(hidden[:, -1:, :])


def _text_parts(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(language model, lm_head) of a LLaVA-style model (Gemma 3, LLaVA)."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "language_model") or not hasattr(model, "lm_head"):
        raise NotImplementedError(
            f"{type(model).__name__} is not supported: image-text-to-text export needs "
            "model.model.language_model and model.lm_head (e.g. Gemma3ForConditionalGeneration, "
            "LlavaForConditionalGeneration)"
        )
    return inner.language_model, model.lm_head


class ImageTextToTextExportableModule(torch.nn.Module):
    """Wraps an image-text-to-text model (Gemma 3, LLaVA) as three exportable methods.

    Args:
        model: `Gemma3ForConditionalGeneration` or `LlavaForConditionalGeneration`, eval mode,
            fp32 or bf16 (it is modified: its text attention becomes ours and vision layers past
            the selected features are dropped; keep a copy if the eager model is needed).
        max_seq_len: most embeddings one `text_decoder` call accepts (prefill chunk size);
            must be at least the image token count so the stock runner can feed an image in
            one call.
        max_context_len: positions the caches hold (prompt, image tokens and generation).
        use_custom_kv_cache: must be True (ExecuTorch custom caches update in place).
        use_custom_sdpa: ExecuTorch's fused SDPA op; False uses plain PyTorch attention.
        vision_attention: attention implementation of the vision tower ("sdpa" or "eager").
        image_preprocessing: how a runtime must preprocess images (written as metadata);
            default: the family's image processor defaults (`modules/vision.py`).
        processor_config: the checkpoint's `preprocessor_config.json` as a dict; its mean,
            std, resample and size override `image_preprocessing`.
        native_kernels: the text decoder's attention on our C++ kernels, as in
            `CausalLMExportableModule` (Gemma 3's sliding layers get exact-size rings); the
            runtime must load libeo_et_kernels.so.
        kv_cache_dtype: the caches' element type; None = the model's. float16 under a float32
            model needs `native_kernels`.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        max_seq_len: int = 128,
        max_context_len: int | None = None,
        use_custom_kv_cache: bool = True,
        use_custom_sdpa: bool = True,
        vision_attention: str = "sdpa",
        image_preprocessing: ImagePreprocessing | None = None,
        processor_config: Mapping[str, Any] | None = None,
        native_kernels: bool = False,
        kv_cache_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        language_model, lm_head = _text_parts(model)
        decoder_cache = DecoderCache(
            model,
            max_seq_len,
            max_context_len,
            use_custom_kv_cache,
            use_custom_sdpa,
            native_kernels,
            kv_cache_dtype,
        )
        max_context_len = decoder_cache.max_context_len
        family = vision_family(model)
        self.model = model.eval()
        config = model.config
        self.text_config = config.get_text_config(decoder=True)
        self.vision_config = config.vision_config
        self.max_seq_len = max_seq_len
        self.max_context_len = max_context_len
        self.use_custom_sdpa = use_custom_sdpa
        self.native_kernels = native_kernels
        self.image_token_id = int(config.image_token_id)
        self.image_size = int(self.vision_config.image_size)
        self.num_channels = int(getattr(self.vision_config, "num_channels", 3))
        self.tokens_per_image = family.tokens_per_image
        preprocessing = image_preprocessing or family.preprocessing
        if processor_config:
            preprocessing = preprocessing.with_processor_config(processor_config)
        self.image_preprocessing = preprocessing
        self.cache = decoder_cache.cache
        # The config setter cascades to every sub-config: the vision tower keeps plain attention.
        self.vision_config._attn_implementation = vision_attention
        self.token_embedding = _TokenEmbedding(model.get_input_embeddings(), int(self.text_config.vocab_size))
        self.vision_encoder = family.encoder
        self.text_decoder = _TextDecoder(language_model, lm_head, decoder_cache)

    def example_pixel_values(self) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        return torch.zeros((1, self.num_channels, self.image_size, self.image_size), dtype=dtype)

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        """{"token_embedding", "vision_encoder", "text_decoder"}, sequence dims dynamic."""
        dynamic = self.max_seq_len > 1
        seq = torch.export.Dim("seq_len", min=1, max=self.max_seq_len) if dynamic else None
        # Token embedding: any prompt length the context holds (the runner embeds a text input
        # in one call; the decoder then takes it in chunks).
        tokens = torch.export.Dim("tokens", min=1, max=self.max_context_len)
        hidden = int(self.text_config.hidden_size)
        dtype = next(self.model.parameters()).dtype
        # Our attention kernel rotates queries (and keys) itself: eo::rope_ring_sdpa.
        with torch.no_grad(), rotary_for_export(self.text_decoder, defer_rotary=self.native_kernels):
            programs = {
                "token_embedding": torch.export.export(
                    self.token_embedding,
                    (torch.zeros((1, 2), dtype=torch.long),),
                    dynamic_shapes={"input_ids": {1: tokens}},
                    strict=False,
                ),
                "vision_encoder": torch.export.export(
                    self.vision_encoder, (self.example_pixel_values(),), strict=False
                ),
                "text_decoder": torch.export.export(
                    self.text_decoder,
                    (
                        torch.zeros((1, 2 if dynamic else 1, hidden), dtype=dtype),
                        torch.arange(2 if dynamic else 1),
                    ),
                    dynamic_shapes={"inputs_embeds": {1: seq}, "cache_position": {0: seq}}
                    if dynamic
                    else None,
                    strict=False,
                ),
            }
        return programs

    def metadata(self) -> dict[str, MetadataValue]:
        """What ExecuTorch's multimodal runner (and ours) read from the program."""
        from executorch_optimum.utils import save_config_to_constant_methods

        overrides: dict[str, MetadataValue] = {
            **self.text_decoder.decoder_cache.runner_metadata(),
            "get_vocab_size": int(self.text_config.vocab_size),
            "image_token_id": self.image_token_id,
            "image_size": self.image_size,
            "tokens_per_image": self.tokens_per_image,
            **self.image_preprocessing.metadata(),
        }
        # Gemma 3's image placeholder: its processor expands BOI into BOI, image tokens, EOI.
        for name in ("boi_token_id", "eoi_token_id"):
            if (value := getattr(self.model.config, name, None)) is not None:
                overrides[name] = int(value)
        return save_config_to_constant_methods(
            self.model.config, getattr(self.model, "generation_config", None), **overrides
        )
