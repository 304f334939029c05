"""Our image preprocessing matches Hugging Face's Gemma 3 image processor (PIL mode).

The reference is transformers' `Gemma3ImageProcessor`, which without torchvision is the
PIL/NumPy backend (`Gemma3ImageProcessorPil`), built from a Gemma 3 `preprocessor_config.json`
dict (no hub). It reads the same PNG files through its own path (`convert_to_rgb`, PIL
BILINEAR resize, NumPy rescale and normalise). Tolerance: 1e-6 absolute, i.e. float32
rounding only; one 8-bit level after the resize would be 2/255 ~ 8e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from executorch_optimum.runtime.multimodal import load_image, preprocess_image

# Gemma 3's preprocessor_config.json, at a small size (the real one is 896).
CONFIG = {
    "image_processor_type": "Gemma3ImageProcessor",
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_pan_and_scan": None,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 64, "width": 64},
}
SIZE = 64
ATOL = 1e-6
# What `Gemma3Processor` passes its image processor (its `images_kwargs`; the JSON holds null).
CALL = {"do_convert_rgb": True, "do_pan_and_scan": False}


@pytest.fixture(scope="module")
def processor():
    import transformers

    hf = transformers.Gemma3ImageProcessor.from_dict(dict(CONFIG))
    assert hf.backend == "pil"  # the slow path, not the torchvision one
    return hf


def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _reference(processor, path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        out = processor(images=image, return_tensors="np", **CALL)["pixel_values"]
    return torch.from_numpy(np.asarray(out))


# (height, width): shrink, enlarge, both, extreme aspect ratio, already the right size.
SHAPES = [(37, 53), (200, 150), (20, 90), (300, 9), (64, 64)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_rgb_png_matches_processor(processor, tmp_path: Path, shape: tuple[int, int]) -> None:
    path = tmp_path / "image.png"
    Image.fromarray(_random((*shape, 3), seed=shape[0] * 1000 + shape[1])).save(path)
    ours = preprocess_image(load_image(path), SIZE)
    want = _reference(processor, path)
    assert ours.shape == want.shape == (1, 3, SIZE, SIZE) and want.dtype == torch.float32
    torch.testing.assert_close(ours, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_match_processor(processor, tmp_path: Path, mode: str) -> None:
    channels = {"L": 1, "RGBA": 4, "P": 3}[mode]
    pixels = _random((45, 70, channels), seed=7)
    pixels = pixels[..., 0] if channels == 1 else pixels
    image = Image.fromarray(pixels)
    if mode == "P":
        image = image.convert("P")
    path = tmp_path / f"image_{mode}.png"
    image.save(path)
    torch.testing.assert_close(
        preprocess_image(load_image(path), SIZE), _reference(processor, path), atol=ATOL, rtol=0
    )


def test_arrays_match_processor(processor) -> None:
    # uint8 arrays (PPM/.npy content) take the processor's NumPy path: RGBA composited there too.
    for channels in (3, 4):
        array = _random((33, 71, channels), seed=channels)
        want = torch.from_numpy(
            np.asarray(processor(images=array, return_tensors="np", **CALL)["pixel_values"])
        )
        torch.testing.assert_close(preprocess_image(torch.from_numpy(array), SIZE), want, atol=ATOL, rtol=0)


def test_torch_bilinear_would_not_match(processor, tmp_path: Path) -> None:
    """Why the runtime resizes with Pillow: torch's antialiased bilinear differs by whole levels."""
    array = _random((200, 150, 3), seed=11)
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    pixels = torch.from_numpy(array).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(pixels, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    torch_way = (resized.round().clamp(0, 255) / 255 - 0.5) / 0.5
    assert (torch_way - _reference(processor, path)).abs().max() > 10 * ATOL


@pytest.mark.parametrize("edge, crop", [(48, 48), (56, 48)])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{h}x{w}" for h, w in SHAPES])
def test_llava_clip_preprocessing_matches_processor(
    tmp_path: Path, shape: tuple[int, int], edge: int, crop: int
) -> None:
    """What a LLaVA export writes as metadata (from its preprocessor_config.json), applied by
    the runtime: BICUBIC short side to `edge`, centre crop `crop`, CLIP mean/std."""
    import transformers

    from executorch_optimum.modules.vision import BILINEAR, ImagePreprocessing
    from tests.multimodal.tiny_vlm import clip_processor_config

    config = clip_processor_config(edge, crop)
    hf = transformers.CLIPImageProcessor.from_dict(dict(config))
    assert hf.backend == "pil"
    # The family default for LLaVA has a shortest edge; the processor config sets its value.
    meta = ImagePreprocessing(resample=BILINEAR, shortest_edge=crop).with_processor_config(config)
    path = tmp_path / "image.png"
    Image.fromarray(_random((*shape, 3), seed=shape[0] + 7 * shape[1])).save(path)
    ours = preprocess_image(
        load_image(path),
        crop,
        meta.mean,
        meta.std,
        resample=meta.resample,
        shortest_edge=meta.shortest_edge,
    )
    with Image.open(path) as image:
        want = torch.from_numpy(np.asarray(hf(images=image, return_tensors="np")["pixel_values"]))
    assert ours.shape == want.shape == (1, 3, crop, crop)
    torch.testing.assert_close(ours, want, atol=ATOL, rtol=0)
