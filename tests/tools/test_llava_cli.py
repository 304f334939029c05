"""`//tools:export --task image-text-to-text` + `//tools:generate --image` for LLaVA, end to end.

The checkpoint carries a `preprocessor_config.json` (CLIP's, short side 32 then a 28 x 28
centre crop): the export must write it into the program, and the runtime apply it. The
reference is transformers' `LlavaProcessor` (CLIPImageProcessor in PIL mode + the test's
tokenizer) on the same prompt text and PNG, then the eager LLaVA model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from tests.multimodal.tiny_vlm import (
    IMAGE_TOKEN,
    LLAVA_IMAGE_SIZE,
    LLAVA_TOKENS_PER_IMAGE,
    clip_processor_config,
    eager_vlm_trace,
    tiny_llava_vlm,
)
from tests.tools.vlm_cli import BOS, EOS, export_vlm, open_images, random_png, run_generate, word_tokenizer

STEPS = 12
SHORTEST_EDGE = 32
PROCESSOR = clip_processor_config(SHORTEST_EDGE, LLAVA_IMAGE_SIZE)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("llava")
    ckpt = root / "ckpt"
    tiny_llava_vlm().save_pretrained(ckpt, safe_serialization=True)
    word_tokenizer({IMAGE_TOKEN: "<image>"}).save(str(ckpt / "tokenizer.json"))
    (ckpt / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    out = root / "out"
    export_vlm(ckpt, out)
    return ckpt, out


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_png(tmp_path_factory.mktemp("img") / "photo.png", (50, 37), seed=4)


def _hf_inputs(text: str, paths: list[Path]) -> tuple[list[int], torch.Tensor]:
    """(input ids, pixel values) from LLaVA's processor."""
    image_processor = transformers.CLIPImageProcessor.from_dict(dict(PROCESSOR))
    assert image_processor.backend == "pil"
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=word_tokenizer({IMAGE_TOKEN: "<image>"}),
        bos_token="<001>",
        eos_token="<002>",
        extra_special_tokens={"image_token": "<image>"},
    )
    processor = transformers.LlavaProcessor(
        image_processor,
        tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    out = processor(text=text, images=open_images(paths), return_tensors="pt")
    return out["input_ids"][0].tolist(), out["pixel_values"]


def _eager_tokens(ckpt: Path, ids: list[int], pixels: torch.Tensor | None) -> list[int]:
    model = transformers.LlavaForConditionalGeneration.from_pretrained(
        ckpt, local_files_only=True, attn_implementation="eager"
    ).eval()
    tokens = eager_vlm_trace(model, torch.tensor([ids]), pixels, STEPS).tokens
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


def test_report_holds_the_checkpoints_preprocessing(exported) -> None:
    _, out = exported
    meta = json.loads((out / "vlm.json").read_text())["metadata"]
    assert meta["image_token_id"] == IMAGE_TOKEN and meta["tokens_per_image"] == LLAVA_TOKENS_PER_IMAGE
    assert meta["image_size"] == LLAVA_IMAGE_SIZE and meta["image_shortest_edge"] == SHORTEST_EDGE
    assert meta["image_resample"] == 3
    assert meta["image_mean"] == pytest.approx(PROCESSOR["image_mean"])
    assert "boi_token_id" not in meta


def test_prompt_with_image_placeholder_gives_eager_tokens(exported, png, capsys) -> None:
    ckpt, out = exported
    text = "<007> <image> <010> <011>"
    code, result, err = run_generate(
        capsys, STEPS, "--pte", str(out / "vlm.pte"), "--prompt", text, "--image", str(png)
    )
    assert code == 0, err
    want_ids, pixels = _hf_inputs(text, [png])
    assert want_ids == [BOS, 7, *[IMAGE_TOKEN] * LLAVA_TOKENS_PER_IMAGE, 10, 11]
    assert result["prompt_ids"] == want_ids
    assert result["tokens"] == _eager_tokens(ckpt, want_ids, pixels)
    # The runtime's pixels are the processor's (the metadata carried its crop and short side).
    from executorch_optimum.runtime.multimodal import MultimodalGenerator

    ours = MultimodalGenerator(out / "vlm.pte").image_pixels(png)
    torch.testing.assert_close(ours, pixels, atol=1e-6, rtol=0)


def test_text_only_prompt(exported, capsys) -> None:
    ckpt, out = exported
    code, result, err = run_generate(
        capsys, STEPS, "--pte", str(out / "vlm.pte"), "--prompt_ids", "1,17,99,4,230"
    )
    assert code == 0, err
    assert result["tokens"] == _eager_tokens(ckpt, [1, 17, 99, 4, 230], None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--image", "{tmp}/missing.png"], "no image file at"),
        (["--image", "{tmp}/notes.png"], "is not a supported image"),
        (["--image", "{tmp}/two.npy"], "channels"),
        (["--image", "{png}", "--image", "{png}"], "1 image placeholder(s) (id 250) but 2 image(s)"),
    ],
)
def test_bad_images_are_one_line_errors(exported, png, tmp_path, capsys, extra, message) -> None:
    import numpy as np

    _, out = exported
    (tmp_path / "notes.png").write_text("not an image")
    np.save(tmp_path / "two.npy", np.zeros((8, 8, 2), dtype=np.uint8))
    argv = ["--pte", str(out / "vlm.pte"), "--prompt", "<007> <image>"]
    argv += [a.format(tmp=tmp_path, png=png) for a in extra]
    code, _, err = run_generate(capsys, STEPS, *argv)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
