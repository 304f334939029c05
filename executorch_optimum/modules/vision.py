"""What differs between image-text-to-text families: image features and image preprocessing.

- Gemma 3 (`gemma3`): SigLIP's last hidden state -> projector (with its 2-D pooling);
  images resized straight to the square input with Pillow BILINEAR, mean = std = 0.5.
- LLaVA (`llava`): one (or several, concatenated) hidden states of a CLIP-like tower, the CLS
  position dropped for `vision_feature_select_strategy="default"` -> projector; images
  resized so the short side is the input size (BICUBIC), centre-cropped, OpenAI CLIP mean/std.

`ImagePreprocessing` is written into the program as metadata, so a runtime preprocesses
images the way the checkpoint's image processor (`preprocessor_config.json`) does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

# PIL filter codes, as image processors store them in `resample`.
BILINEAR = 2
BICUBIC = 3
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImagePreprocessing:
    """How raw 8-bit RGB becomes the vision encoder's input (see runtime.multimodal).

    shortest_edge: 0 resizes straight to the square input; otherwise the short side is
    resized to it (aspect kept) and the centre cropped to the input size.
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: int = BILINEAR
    shortest_edge: int = 0

    def with_processor_config(self, processor: Mapping[str, Any]) -> ImagePreprocessing:
        """These defaults overridden by an image processor's `preprocessor_config.json` dict."""
        changes: dict[str, Any] = {}
        for key, field in (("image_mean", "mean"), ("image_std", "std")):
            value = processor.get(key)
            if isinstance(value, list | tuple) and len(value) == 3:
                changes[field] = tuple(float(v) for v in value)
        if isinstance(processor.get("resample"), int):
            changes["resample"] = int(processor["resample"])
        size = processor.get("size")
        if isinstance(size, dict) and self.shortest_edge and isinstance(size.get("shortest_edge"), int):
            changes["shortest_edge"] = int(size["shortest_edge"])
        return replace(self, **changes)

    def metadata(self) -> dict[str, Any]:
        return {
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "image_resample": self.resample,
            "image_shortest_edge": self.shortest_edge,
        }


class VisionEncoder(torch.nn.Module):
    """pixel values [1, 3, H, W] -> image-token embeddings [1, T, D] in the language model's space.

    feature_layers: None takes the tower's last hidden state; else the hidden states at
    these indices (as `output_hidden_states` numbers them), concatenated on the feature dim.
    """

    def __init__(
        self,
        vision_tower: torch.nn.Module,
        projector: torch.nn.Module,
        feature_layers: tuple[int, ...] | None = None,
        drop_cls: bool = False,
    ) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.projector = projector
        self.feature_layers = feature_layers
        self.drop_cls = drop_cls

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.feature_layers is None:
            hidden = self.vision_tower(pixel_values=pixel_values, return_dict=True).last_hidden_state
        else:
            states = self.vision_tower(
                pixel_values=pixel_values, output_hidden_states=True, return_dict=True
            ).hidden_states
            hidden = torch.cat([states[i] for i in self.feature_layers], dim=-1)
        if self.drop_cls:
            hidden = hidden[:, 1:]
        return self.projector(hidden)


@dataclass
class VisionFamily:
    """A family's vision encoder, its image token count and its image preprocessing defaults."""

    encoder: VisionEncoder
    tokens_per_image: int
    preprocessing: ImagePreprocessing


def _gemma3(model: torch.nn.Module) -> VisionFamily:
    inner, config = model.model, model.config
    return VisionFamily(
        VisionEncoder(inner.vision_tower, inner.multi_modal_projector),
        int(config.mm_tokens_per_image),
        ImagePreprocessing(),
    )


def _encoder_layers(tower: torch.nn.Module) -> torch.nn.ModuleList | None:
    encoder = getattr(getattr(tower, "vision_model", tower), "encoder", None)
    layers = getattr(encoder, "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) else None


def _llava(model: torch.nn.Module) -> VisionFamily:
    inner, config = model.model, model.config
    vision = config.vision_config
    strategy = config.vision_feature_select_strategy
    if strategy not in ("default", "full"):
        raise NotImplementedError(f"vision_feature_select_strategy={strategy!r} is not supported")
    layer = config.vision_feature_layer
    requested = [layer] if isinstance(layer, int) else list(layer)
    count = int(vision.num_hidden_layers)
    # hidden_states holds the embeddings and every layer's output: count + 1 entries.
    absolute = tuple(i if i >= 0 else count + 1 + i for i in requested)
    if not all(0 <= i <= count for i in absolute):
        raise ValueError(f"vision_feature_layer {layer} is out of range for {count} vision layers")
    layers = _encoder_layers(inner.vision_tower)
    if layers is not None and len(layers) > max(absolute):
        # Layers past the last selected one do not reach the output: drop their weights.
        del layers[max(absolute) :]
    patches = (int(vision.image_size) // int(vision.patch_size)) ** 2
    drop_cls = strategy == "default"
    return VisionFamily(
        VisionEncoder(inner.vision_tower, inner.multi_modal_projector, absolute, drop_cls),
        patches + (0 if drop_cls else 1),
        ImagePreprocessing(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, BICUBIC, int(vision.image_size)),
    )


FAMILIES = {"gemma3": _gemma3, "llava": _llava}


def vision_family(model: torch.nn.Module) -> VisionFamily:
    """The vision side of a supported image-text-to-text model (it may drop unused layers)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in FAMILIES:
        raise NotImplementedError(
            f"{type(model).__name__} ('{model_type}') is not supported for image-text-to-text "
            f"(supported: {', '.join(sorted(FAMILIES))})"
        )
    return FAMILIES[model_type](model)
