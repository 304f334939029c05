"""`bazel run //tools:export`: export a Hugging Face checkpoint to an ExecuTorch .pte.

Thin command line over the library; the pipeline itself lands with the exporter work.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bazel run //tools:export --",
        description="Export a Hugging Face checkpoint directory to an ExecuTorch .pte program.",
    )
    parser.add_argument("--model", metavar="DIR", help="checkpoint directory (config.json + *.safetensors)")
    parser.add_argument("--task", default="text-generation", help="what to export (default: %(default)s)")
    parser.add_argument("--recipe", default="xnnpack", help="lowering recipe (default: %(default)s)")
    parser.add_argument("--output_dir", metavar="DIR", help="where to write model.pte")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    print("\nThe export pipeline is not built yet; this command prints its interface only.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
