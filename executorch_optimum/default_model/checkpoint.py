"""Random-initialised checkpoint from any config.json, with a fixed seed.

Writes exactly config.json, model.safetensors and tokenizer.json (a byte-level BPE trained
locally, with as many tokens as the config's vocabulary). The same config and seed give the
same bytes, so every export downstream of it is cacheable. Used by the zoo's
`random_checkpoint` rule (tools/zoo/make_checkpoint.py) and the benchmark.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def make_checkpoint(config_json: Path, out_dir: Path, seed: int, scratch: Path) -> None:
    """Writes the three CHECKPOINT_FILES into `out_dir`; `scratch` is an empty work directory."""
    import torch
    import transformers

    from executorch_optimum.default_model import train_tokenizer

    staging = scratch / "config"
    staging.mkdir()
    shutil.copyfile(config_json, staging / "config.json")
    config = transformers.AutoConfig.from_pretrained(staging, local_files_only=True)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    saved = scratch / "saved"
    model.save_pretrained(saved, safe_serialization=True, max_shard_size="1000GB")
    train_tokenizer(config.vocab_size).save(str(saved / "tokenizer.json"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        shutil.move(saved / name, out_dir / name)
