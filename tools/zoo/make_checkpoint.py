"""Random-initialised checkpoint from a config.json, with a fixed seed (the zoo's
`random_checkpoint` rule).

Writes exactly config.json, model.safetensors and tokenizer.json (a byte-level BPE trained
locally, with as many tokens as the config's vocabulary) into --out_dir. The same config
and seed give the same bytes, so every export downstream of it is cacheable.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from action_env import action_scratch

OUTPUTS = ("config.json", "model.safetensors", "tokenizer.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path, help="a Hugging Face config.json")
    p.add_argument("--out_dir", required=True, type=Path, help="where the three files go")
    p.add_argument("--seed", type=int, default=0, help="torch seed for the weights (default: %(default)s)")
    return p


def make_checkpoint(config_json: Path, out_dir: Path, seed: int, scratch: Path) -> None:
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
    for name in OUTPUTS:
        shutil.move(saved / name, out_dir / name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with action_scratch(args.out_dir / "model.safetensors") as scratch:
        make_checkpoint(args.config, args.out_dir, args.seed, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
