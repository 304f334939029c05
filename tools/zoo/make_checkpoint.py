"""Random-initialised checkpoint from a config.json, with a fixed seed (the zoo's
`random_checkpoint` rule).

Writes exactly config.json, model.safetensors and tokenizer.json (a byte-level BPE trained
locally, with as many tokens as the config's vocabulary) into --out_dir. The same config
and seed give the same bytes, so every export downstream of it is cacheable. The work is
`executorch_optimum.default_model.checkpoint.make_checkpoint` (the benchmark uses it too).
"""

from __future__ import annotations

import argparse
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
    # Imported here: the package imports torch, which must come after action_scratch.
    from executorch_optimum.default_model.checkpoint import make_checkpoint as write_checkpoint

    write_checkpoint(config_json, out_dir, seed, scratch)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with action_scratch(args.out_dir / "model.safetensors") as scratch:
        make_checkpoint(args.config, args.out_dir, args.seed, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
