"""`//tools:export --task image-text-to-text`, then `//tools:generate --image`, end to end.

One export of a tiny random Gemma 3 checkpoint (tests/multimodal/tiny_vlm.py) per test file.
The reference is independent of our runtime: transformers' `Gemma3Processor` (its image
processor in PIL mode, and the test's tokenizer) turns the same prompt text and PNG into
input ids and pixel values, and the eager transformers model generates from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

from tests.multimodal.tiny_vlm import (
    BOI_TOKEN,
    EOI_TOKEN,
    IMAGE_SIZE,
    IMAGE_TOKEN,
    TOKENS_PER_IMAGE,
    eager_vlm_trace,
    tiny_gemma3_vlm,
)
from tests.tools.vlm_cli import BOS, EOS, export_vlm, open_images, random_png, run_generate, word_tokenizer

NEWLINES = 253  # "\n\n" in the tiny tokenizer
STEPS = 12
SPECIAL = {IMAGE_TOKEN: "<image_soft_token>", BOI_TOKEN: "<start_of_image>", EOI_TOKEN: "<end_of_image>"}


def _tokenizer():
    """Word-level: "<007>" is id 7; Gemma 3's image tokens and "\\n\\n" at the tiny model's ids."""
    return word_tokenizer(SPECIAL, {NEWLINES: "\n\n"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint dir, out dir holding vlm.pte, tokenizer.json and vlm.json)."""
    root = tmp_path_factory.mktemp("itt")
    ckpt = root / "ckpt"
    tiny_gemma3_vlm().save_pretrained(ckpt, safe_serialization=True)
    _tokenizer().save(str(ckpt / "tokenizer.json"))
    out = root / "out"
    export_vlm(ckpt, out)
    return ckpt, out


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_png(tmp_path_factory.mktemp("img") / "photo.png", (50, 37), seed=4)


def _hf_processor() -> transformers.Gemma3Processor:
    image_processor = transformers.Gemma3ImageProcessor.from_dict(
        {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "resample": 2}
        | {"image_mean": [0.5] * 3, "image_std": [0.5] * 3, "rescale_factor": 1 / 255}
    )
    special = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(), bos_token="<001>", eos_token="<002>", extra_special_tokens=special
    )
    return transformers.Gemma3Processor(image_processor, tokenizer, image_seq_length=TOKENS_PER_IMAGE)


def _hf_inputs(text: str, paths: list[Path]) -> tuple[list[int], torch.Tensor]:
    """(input ids, pixel values) from Gemma 3's processor."""
    out = _hf_processor()(text=text, images=open_images(paths), return_tensors="pt")
    return out["input_ids"][0].tolist(), out["pixel_values"]


def _hf_pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        out = _hf_processor().image_processor(
            images=image, return_tensors="pt", do_convert_rgb=True, do_pan_and_scan=False
        )
    return out["pixel_values"]


def _eager_tokens(ckpt: Path, ids: list[int], pixels: torch.Tensor | None) -> list[int]:
    model = transformers.Gemma3ForConditionalGeneration.from_pretrained(
        ckpt, local_files_only=True, attn_implementation="eager"
    ).eval()
    tokens = eager_vlm_trace(model, torch.tensor([ids]), pixels, STEPS).tokens
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


def _generate(capsys, *argv: str) -> tuple[int, dict | None, str]:
    return run_generate(capsys, STEPS, *argv)


def test_export_writes_multimodal_program_and_report(exported) -> None:
    _, out = exported
    from executorch.runtime import Runtime

    methods = set(Runtime.get().load_program(out / "vlm.pte").method_names)
    assert {"token_embedding", "vision_encoder", "text_decoder"} <= methods
    assert (out / "tokenizer.json").is_file()
    report = json.loads((out / "vlm.json").read_text())
    assert report["options"]["task"] == "image-text-to-text"
    meta = report["metadata"]
    assert meta["image_token_id"] == IMAGE_TOKEN and meta["tokens_per_image"] == TOKENS_PER_IMAGE
    assert meta["boi_token_id"] == BOI_TOKEN and meta["eoi_token_id"] == EOI_TOKEN
    assert report["size_bytes"] == (out / "vlm.pte").stat().st_size


def test_text_prompt_with_placeholder_and_png_gives_eager_tokens(exported, png, capsys) -> None:
    ckpt, out = exported
    code, result, err = _generate(
        capsys,
        "--pte",
        str(out / "vlm.pte"),
        "--prompt",
        "<007> <start_of_image> <010> <011>",
        "--image",
        str(png),
    )
    assert code == 0, err
    want_ids, pixels = _hf_inputs("<007> <start_of_image> <010> <011>", [png])
    # The processor's layout around the placeholder.
    assert want_ids == [
        BOS,
        7,
        NEWLINES,
        BOI_TOKEN,
        *[IMAGE_TOKEN] * TOKENS_PER_IMAGE,
        EOI_TOKEN,
        NEWLINES,
        10,
        11,
    ]
    assert result["prompt_ids"] == want_ids
    assert result["tokens"] == _eager_tokens(ckpt, want_ids, pixels)
    assert result["stats"]["generated_tokens"] == len(result["tokens"])


def test_native_kernels_export_gives_eager_tokens(exported, png, tmp_path, capsys) -> None:
    """`--native_kernels`: the text decoder's attention on our C++ kernels, which //tools:generate
    loads; the same prompt and image give the eager model's tokens."""
    ckpt, _ = exported
    out = tmp_path / "native"
    export_vlm(ckpt, out, "--native_kernels")
    capsys.readouterr()  # the export's progress lines
    assert json.loads((out / "vlm.json").read_text())["options"]["native_kernels"] is True
    text = "<007> <start_of_image> <010> <011>"
    code, result, err = _generate(
        capsys, "--pte", str(out / "vlm.pte"), "--prompt", text, "--image", str(png)
    )
    assert code == 0, err
    want_ids, pixels = _hf_inputs(text, [png])
    assert result["prompt_ids"] == want_ids
    assert result["tokens"] == _eager_tokens(ckpt, want_ids, pixels)


def test_prompt_without_placeholder_gets_the_image_first(exported, png, capsys) -> None:
    _, out = exported
    code, result, err = _generate(
        capsys, "--pte", str(out / "vlm.pte"), "--prompt", "<010> <011>", "--image", str(png)
    )
    assert code == 0, err
    # As the processor lays out Gemma 3's chat template for [image, text].
    assert result["prompt_ids"] == _hf_inputs("<start_of_image><010> <011>", [png])[0]


def test_prompt_ids_with_two_images(exported, png, tmp_path, capsys) -> None:
    ckpt, out = exported
    second = random_png(tmp_path / "second.jpg", (20, 70), seed=9)
    code, result, err = _generate(
        capsys,
        "--pte",
        str(out / "vlm.pte"),
        "--prompt_ids",
        f"{BOS},7,{BOI_TOKEN},9,{BOI_TOKEN},12",
        "--image",
        str(png),
        "--image",
        str(second),
    )
    assert code == 0, err
    block = [BOI_TOKEN, *[IMAGE_TOKEN] * TOKENS_PER_IMAGE, EOI_TOKEN]
    want_ids = [BOS, 7, *block, 9, *block, 12]
    assert result["prompt_ids"] == want_ids
    # Two images: the eager model takes both pixel batches in order.
    pixels = torch.cat([_hf_pixels(png), _hf_pixels(second)])
    assert result["tokens"] == _eager_tokens(ckpt, want_ids, pixels)


def test_text_only_prompt_on_the_multimodal_program(exported, capsys) -> None:
    ckpt, out = exported
    code, result, err = _generate(capsys, "--pte", str(out / "vlm.pte"), "--prompt_ids", "1,17,99,4,230")
    assert code == 0, err
    assert result["tokens"] == _eager_tokens(ckpt, [1, 17, 99, 4, 230], None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image", "{tmp}/missing.png"], "no image file at"),
        (["--image", "{tmp}/notes.png"], "is not a supported image"),
        (["--image", "{png}", "--image", "{png}"], "1 <start_of_image> placeholder(s) but 2 --image"),
        (["--image", "{png}", "--temperature", "0.7"], "greedy only"),
    ],
)
def test_bad_images_are_one_line_errors(exported, png, tmp_path, capsys, extra, message) -> None:
    _, out = exported
    (tmp_path / "notes.png").write_text("not an image")
    argv = ["--pte", str(out / "vlm.pte"), "--prompt", "<007> <start_of_image>"]
    argv += [a.format(tmp=tmp_path, png=png) for a in extra]
    code, _, err = _generate(capsys, *argv)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
