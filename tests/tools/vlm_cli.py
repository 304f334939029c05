"""Shared by the image-text-to-text CLI tests: a word-level tokenizer, export, generate, PNGs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import export as export_cli  # noqa: E402
from generate import main as generate  # noqa: E402  (//tools:generate: loads our kernels too)

BOS, EOS = 1, 2


def word_tokenizer(special: dict[int, str], added: dict[int, str] | None = None) -> Tokenizer:
    """Word-level over 256 ids: "<007>" is id 7, `special` (id -> text) are special tokens,
    `added` plain added tokens (e.g. "\\n\\n"); BOS is prepended."""
    added = added or {}
    vocab = {f"<{i:03d}>": i for i in range(256) if i not in special and i not in added}
    vocab |= {text: token_id for token_id, text in (special | added).items()}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<000>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in special.values()])
    if added:
        tokenizer.add_tokens([AddedToken(t, normalized=False) for t in added.values()])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<001> $A", special_tokens=[("<001>", BOS)]
    )
    return tokenizer


def export_vlm(ckpt: Path, out: Path, *flags: str) -> None:
    """//tools:export --task image-text-to-text of `ckpt` into out/vlm.pte (+ vlm.json), with
    any further `flags`."""
    code = export_cli.main(
        [
            "--model",
            str(ckpt),
            "--task",
            "image-text-to-text",
            "--max_seq_len",
            "8",
            "--max_context_len",
            "64",
            "--output",
            str(out / "vlm.pte"),
            "--report",
            str(out / "vlm.json"),
            *flags,
        ]
    )
    assert code == 0


def run_generate(capsys, steps: int, *argv: str) -> tuple[int, dict | None, str]:
    """(exit code, the --json output, stderr) of //tools:generate."""
    code = generate([*argv, "--max_new_tokens", str(steps), "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else None, captured.err


def random_png(path: Path, shape: tuple[int, int], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def open_images(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.copy())
    return images
