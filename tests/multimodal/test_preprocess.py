"""Image reading and preprocessing of the multimodal runtime (no torchvision, no PIL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from executorch_optimum.runtime.multimodal import ImageError, load_image, preprocess_image


def _ppm(path: Path, image: torch.Tensor) -> Path:
    height, width, _ = image.shape
    path.write_bytes(b"P6\n# test\n%d %d\n255\n" % (width, height) + image.numpy().tobytes())
    return path


def _image(height: int = 20, width: int = 30, channels: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (height, width, channels), generator=g, dtype=torch.uint8)


def test_ppm_and_npy_round_trip(tmp_path: Path) -> None:
    image = _image()
    assert torch.equal(load_image(_ppm(tmp_path / "a.ppm", image)), image)
    np.save(tmp_path / "a.npy", image.numpy())
    assert torch.equal(load_image(tmp_path / "a.npy"), image)


def test_rescale_and_normalise_like_gemma3_processor() -> None:
    image = _image(16, 16)
    pixels = preprocess_image(image, 16)
    want = (image.permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert pixels.shape == (1, 3, 16, 16) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0], want)
    assert float(pixels.min()) >= -1 and float(pixels.max()) <= 1


def test_resize_keeps_constant_colour_and_rounds_to_8_bits() -> None:
    image = torch.empty(40, 24, 3, dtype=torch.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 128, 250
    pixels = preprocess_image(image, 32)
    assert pixels.shape == (1, 3, 32, 32)
    for channel, value in enumerate((10, 128, 250)):
        torch.testing.assert_close(pixels[0, channel], torch.full((32, 32), (value / 255 - 0.5) / 0.5))
    # After the resize, every value is an 8-bit level (as in a PIL image) before rescaling.
    levels = (preprocess_image(_image(50, 70), 32) * 0.5 + 0.5) * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-3, rtol=0)


def test_grayscale_is_replicated_to_rgb() -> None:
    gray = _image(16, 16, 1)
    pixels = preprocess_image(gray, 16)
    assert torch.equal(pixels[0, 0], pixels[0, 1]) and torch.equal(pixels[0, 1], pixels[0, 2])


def test_bad_images_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.ppm")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match="not a supported image"):
        load_image(tmp_path / "notes.txt")
    (tmp_path / "cut.ppm").write_bytes(b"P6\n4 4\n255\n" + bytes(10))
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "cut.ppm")
    with pytest.raises(ImageError, match="channels"):
        preprocess_image(_image(8, 8, 4), 16)
    with pytest.raises(ImageError, match="uint8"):
        preprocess_image(_image().float(), 16)
    with pytest.raises(ImageError, match="shape"):
        preprocess_image(torch.zeros(8, 8, dtype=torch.uint8), 16)
    assert issubclass(ImageError, ValueError)
