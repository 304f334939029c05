"""Tiny random image-text-to-text models (Gemma 3, LLaVA) and prompts for multimodal parity tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import transformers

from tests.support.parity import Trace, reference_cache

IMAGE_TOKEN = 250
BOI_TOKEN = 251
EOI_TOKEN = 252
# 32x32 image, 8x8 patches -> 4x4 patches, pooled 2x2 -> 4 image tokens.
IMAGE_SIZE = 32
TOKENS_PER_IMAGE = 4


def tiny_gemma3_vlm(seed: int = 0) -> transformers.Gemma3ForConditionalGeneration:
    """Gemma 3 with a 1-layer SigLIP tower and a 2-layer text model (1 sliding : 1 global)."""
    vision = transformers.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    text = transformers.Gemma3TextConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=8,
        sliding_window_pattern=2,
        query_pre_attn_scalar=24,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = transformers.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        image_token_index=IMAGE_TOKEN,
        boi_token_index=BOI_TOKEN,
        eoi_token_index=EOI_TOKEN,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.Gemma3ForConditionalGeneration(config)
    # Random init leaves the projector at zero: give the image a visible effect on the logits.
    with torch.no_grad():
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        weight.copy_(torch.randn_like(weight) * 0.2)
    return model.eval()


# 28x28 image, 14x14 patches -> 4 patches + CLS; "default" strategy drops CLS -> 4 tokens.
LLAVA_IMAGE_SIZE = 28
LLAVA_TOKENS_PER_IMAGE = 4


def tiny_llava_vlm(seed: int = 0) -> transformers.LlavaForConditionalGeneration:
    """LLaVA with a 3-layer CLIP tower (features of layer -2, CLS dropped) and a 2-layer Llama."""
    vision = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=LLAVA_IMAGE_SIZE,
        patch_size=14,
        projection_dim=32,
    )
    text = transformers.LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = transformers.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(config)
    # Random init keeps the projector tiny: give the image a visible effect on the logits.
    with torch.no_grad():
        for linear in (
            model.model.multi_modal_projector.linear_1,
            model.model.multi_modal_projector.linear_2,
        ):
            linear.weight.copy_(torch.randn_like(linear.weight) * 0.3)
    return model.eval()


def clip_processor_config(shortest_edge: int, crop: int) -> dict:
    """LLaVA 1.5's preprocessor_config.json (CLIPImageProcessor) at other sizes (real: 336/336)."""
    return {
        "image_processor_type": "CLIPImageProcessor",
        "crop_size": {"height": crop, "width": crop},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": shortest_edge},
    }


@dataclass(frozen=True)
class TinyVLM:
    """One family's tiny model and how its prompts hold an image."""

    name: str
    build: Callable[[], transformers.PreTrainedModel]
    image_size: int
    tokens_per_image: int
    boi: int | None  # Gemma 3 wraps the image tokens in BOI ... EOI; LLaVA does not
    eoi: int | None

    def image_block(self) -> list[int]:
        wrap = ([self.boi], [self.eoi]) if self.boi is not None and self.eoi is not None else ([], [])
        return [*wrap[0], *[IMAGE_TOKEN] * self.tokens_per_image, *wrap[1]]

    def image_prompt(self, text_before: int = 5, text_after: int = 6) -> torch.Tensor:
        """[1, S] ids: BOS, text, the image's block, text."""
        g = torch.Generator().manual_seed(1)
        before = torch.randint(3, 240, (text_before,), generator=g).tolist()
        after = torch.randint(3, 240, (text_after,), generator=g).tolist()
        return torch.tensor([[1, *before, *self.image_block(), *after]])

    def pixel_values(self, seed: int = 2) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.rand((1, 3, self.image_size, self.image_size), generator=g) * 2 - 1


GEMMA3 = TinyVLM("gemma3", tiny_gemma3_vlm, IMAGE_SIZE, TOKENS_PER_IMAGE, BOI_TOKEN, EOI_TOKEN)
LLAVA = TinyVLM("llava", tiny_llava_vlm, LLAVA_IMAGE_SIZE, LLAVA_TOKENS_PER_IMAGE, None, None)
FAMILIES = [GEMMA3, LLAVA]


def image_prompt(text_before: int = 5, text_after: int = 6) -> torch.Tensor:
    """Gemma 3's [1, S] ids: BOS, text, BOI, image placeholders, EOI, text."""
    return GEMMA3.image_prompt(text_before, text_after)


def pixel_values(seed: int = 2) -> torch.Tensor:
    return GEMMA3.pixel_values(seed)


# (ids [1, S]) -> embeddings [1, S, D]; (pixels) -> [1, T, D]; (embeddings, positions) -> logits
Embed = Callable[[torch.Tensor], torch.Tensor]
Encode = Callable[[torch.Tensor], torch.Tensor]
Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def eager_vlm_trace(
    model: transformers.PreTrainedModel,
    prompt: torch.Tensor,
    pixels: torch.Tensor | None,
    steps: int,
    kv_dtype: torch.dtype | None = None,
) -> Trace:
    """Greedy decode of the eager model (its own cache, causal attention) from a prompt + image;
    `kv_dtype` rounds what the cache holds (tests.support.parity.RoundingCache)."""
    cache = reference_cache(model, kv_dtype)
    logits, tokens = [], []
    with torch.no_grad():
        row = model(input_ids=prompt, pixel_values=pixels, cache=cache, use_cache=True).logits[0, -1]
        for _ in range(steps):
            logits.append(row)
            token = int(row.argmax())
            tokens.append(token)
            row = model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True).logits[0, -1]
        logits.append(row)
    return Trace(logits, tokens)


def splice(embed: Embed, encode: Encode, prompt: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
    embeddings = embed(prompt).clone()
    if pixels is not None:
        slots = prompt[0] == IMAGE_TOKEN
        embeddings[0, slots] = encode(pixels)[0]
    return embeddings


def program_vlm_trace(
    embed: Embed,
    encode: Encode,
    decode: Decode,
    prompt: torch.Tensor,
    pixels: torch.Tensor | None,
    steps: int,
    chunk: int,
    forced: list[int],
) -> Trace:
    """Embed, splice the image, prefill in chunks, then decode feeding `forced` (teacher forcing)."""
    logits, tokens = [], []
    length = prompt.shape[1]
    with torch.no_grad():
        embeddings = splice(embed, encode, prompt, pixels)
        for begin in range(0, length, chunk):
            part = embeddings[:, begin : begin + chunk]
            out = decode(part, torch.arange(begin, begin + part.shape[1]))
        row = out[0, -1]
        for i in range(steps):
            logits.append(row)
            tokens.append(int(row.argmax()))
            row = decode(embed(torch.tensor([[forced[i]]])), torch.tensor([length + i]))[0, -1]
        logits.append(row)
    return Trace(logits, tokens)
