"""Image reading (Pillow formats, PPM, .npy) and preprocessing of the multimodal runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from executorch_optimum.runtime.multimodal import (
    ImageError,
    expand_image_placeholders,
    load_image,
    preprocess_image,
    to_rgb,
)


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
        preprocess_image(_image(8, 8, 2), 16)
    with pytest.raises(ImageError, match="uint8"):
        preprocess_image(_image().float(), 16)
    with pytest.raises(ImageError, match="shape"):
        preprocess_image(torch.zeros(8, 8, dtype=torch.uint8), 16)
    assert issubclass(ImageError, ValueError)


def test_png_round_trips_and_jpeg_reads_as_rgb(tmp_path: Path) -> None:
    image = _image(21, 13)
    Image.fromarray(image.numpy()).save(tmp_path / "a.png")
    assert torch.equal(load_image(tmp_path / "a.png"), image)
    Image.fromarray(image.numpy()).save(tmp_path / "a.jpg", quality=95)
    jpeg = load_image(tmp_path / "a.jpg")
    assert jpeg.shape == (21, 13, 3) and jpeg.dtype == torch.uint8
    with Image.open(tmp_path / "a.jpg") as decoded:  # lossy: compare with Pillow's own decoding
        assert torch.equal(jpeg, torch.from_numpy(np.array(decoded.convert("RGB"))))


def test_grey_and_palette_files_become_rgb(tmp_path: Path) -> None:
    grey = _image(9, 11, 1)[..., 0]
    Image.fromarray(grey.numpy()).save(tmp_path / "grey.png")
    rgb = load_image(tmp_path / "grey.png")
    assert rgb.shape == (9, 11, 3)
    for channel in range(3):
        assert torch.equal(rgb[..., channel], grey)
    Image.fromarray(_image(9, 11).numpy()).convert("P").save(tmp_path / "palette.png")
    assert load_image(tmp_path / "palette.png").shape == (9, 11, 3)


def test_alpha_is_composited_onto_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # opaque red-ish top, fully transparent bottom
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    rgb = load_image(tmp_path / "alpha.png")
    assert rgb.shape == (4, 4, 3)
    assert rgb[0, 0].tolist() == [200, 0, 0] and rgb[3, 3].tolist() == [255, 255, 255]
    # The same rule for arrays: alpha * rgb + (1 - alpha) * 255.
    half = torch.tensor([[[100, 0, 255, 128]]], dtype=torch.uint8)
    want = [round(128 / 255 * v + (1 - 128 / 255) * 255) for v in (100, 0, 255)]
    assert to_rgb(half)[0, 0].tolist() == want
    assert preprocess_image(torch.from_numpy(rgba), 4).shape == (1, 3, 4, 4)


def test_broken_files_are_image_errors(tmp_path: Path) -> None:
    data = tmp_path / "x.png"
    Image.fromarray(_image().numpy()).save(data)
    (tmp_path / "cut.png").write_bytes(data.read_bytes()[:60])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="not a supported image"):
        load_image(tmp_path / "empty.jpg")


def test_expand_image_placeholders() -> None:
    image, boi, eoi, bos = 9, 7, 8, 1
    kwargs = {"image_token_id": image, "tokens_per_image": 2, "boi_token_id": boi, "eoi_token_id": eoi}
    # A placeholder per image -> BOI, image tokens, EOI.
    assert expand_image_placeholders([bos, 5, boi, 6], 1, **kwargs) == [bos, 5, boi, 9, 9, eoi, 6]
    # Already expanded: unchanged.
    assert expand_image_placeholders([bos, boi, 9, 9, eoi, 6], 1, **kwargs) == [bos, boi, 9, 9, eoi, 6]
    # No placeholder: one block per image after BOS.
    assert expand_image_placeholders([bos, 5], 2, bos_id=bos, **kwargs) == [
        bos,
        boi,
        9,
        9,
        eoi,
        boi,
        9,
        9,
        eoi,
        5,
    ]
    assert expand_image_placeholders([5], 1, bos_id=bos, **kwargs) == [boi, 9, 9, eoi, 5]
    with pytest.raises(ValueError, match="2 image placeholder"):
        expand_image_placeholders([boi, boi], 1, **kwargs)
    with pytest.raises(ValueError, match="3 image tokens"):
        expand_image_placeholders([9, 9, 9], 1, **kwargs)


def test_expand_llava_placeholders() -> None:
    """LLaVA: no BOI/EOI; each single image token is the placeholder for one image."""
    image, bos = 9, 1
    kwargs = {"image_token_id": image, "tokens_per_image": 3}
    assert expand_image_placeholders([bos, 5, image, 6], 1, **kwargs) == [bos, 5, 9, 9, 9, 6]
    assert expand_image_placeholders([bos, image, 5, image], 2, **kwargs) == [bos, 9, 9, 9, 5, 9, 9, 9]
    # Already expanded, or no placeholder (images go after BOS).
    assert expand_image_placeholders([bos, 9, 9, 9, 6], 1, **kwargs) == [bos, 9, 9, 9, 6]
    assert expand_image_placeholders([bos, 5], 1, bos_id=bos, **kwargs) == [bos, 9, 9, 9, 5]
    with pytest.raises(ValueError, match="2 image placeholder"):
        expand_image_placeholders([bos, image, image], 1, **kwargs)
    with pytest.raises(ValueError, match="1 image placeholder"):
        expand_image_placeholders([bos, image], 0, **kwargs)
