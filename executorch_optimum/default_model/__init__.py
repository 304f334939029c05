"""The embedded default model: SmolLM2-135M's real config, random weights, a local tokenizer.

It lets `bazel run //tools:export` work on a fresh machine with no model hub. The weights
are random (fixed seed): the program runs and is fast, but it writes gibberish.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CONFIG_PATH = Path(__file__).with_name("config.json")
SEED = 0
_CORPUS = (
    "ExecuTorch runs PyTorch programs on phones and edge devices. "
    "A language model predicts the next token from the tokens before it. "
    "The quick brown fox jumps over the lazy dog. 0123456789 "
)


def train_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with exactly `vocab_size` tokens (padded with fillers).

    The stock ExecuTorch runner samples over the tokenizer's vocabulary, so it must equal
    the model's: a smaller one silently narrows the argmax, a larger one reads past logits.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    missing = vocab_size - tokenizer.get_vocab_size()
    if missing > 0:
        tokenizer.add_special_tokens([f"<|filler_{i}|>" for i in range(missing)])
    return tokenizer


def write_default_checkpoint(directory: Path) -> Path:
    """Writes config.json, model.safetensors and tokenizer.json of the default model."""
    directory.mkdir(parents=True, exist_ok=True)
    config = transformers.AutoConfig.from_pretrained(CONFIG_PATH.parent)
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer = train_tokenizer(config.vocab_size)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory
