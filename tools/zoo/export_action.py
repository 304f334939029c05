"""The zoo's export step (`executorch_export` in //tools:zoo.bzl): checkpoint files -> .pte
+ report, as a Bazel action that can run sandboxed, from a cache or on a remote worker.

The same pipeline as `//tools:export` (`executorch_optimum.export.export_model`), with what a
cacheable action needs: the checkpoint arrives as a list of declared files (staged into a
scratch directory, so nothing undeclared is read), outputs are relative paths, and the
report records the checkpoint's label instead of a directory path, so two builds of the same
inputs, wherever they run, give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from action_env import action_scratch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint", required=True, nargs="+", type=Path, help="checkpoint files or directories"
    )
    p.add_argument("--checkpoint_label", default="checkpoint", help="what the report calls the checkpoint")
    p.add_argument("--output", required=True, type=Path, help="the .pte to write")
    p.add_argument("--report", required=True, type=Path, help="the JSON report to write")
    p.add_argument("--task", default="text-generation", help="the export task (default: %(default)s)")
    p.add_argument(
        "--qlinear", choices=["8da4w", "8da8w", "4w", "8w"], help="linear quantization (default none)"
    )
    p.add_argument(
        "--qlinear_group_size", type=int, default=32, help="weights per linear scale (default: %(default)s)"
    )
    p.add_argument("--qembedding", choices=["8w", "4w"], help="embedding quantization (default none)")
    p.add_argument(
        "--qembedding_group_size",
        type=int,
        default=0,
        help="weights per embedding scale (default 0: one per row)",
    )
    p.add_argument(
        "--max_seq_len", type=int, default=128, help="longest prefill chunk (default: %(default)s)"
    )
    p.add_argument("--max_context_len", type=int, help="default: the model's limit, at most 2048")
    return p


def stage_checkpoint(files: list[Path], into: Path) -> Path:
    """Symlinks every declared checkpoint file (or a directory's files) into one directory."""
    into.mkdir(parents=True)
    for path in files:
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            link = into / file.name
            if link.exists():
                raise SystemExit(f"error: two checkpoint files named {file.name}")
            link.symlink_to(file.resolve())
    return into


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with action_scratch(args.output) as scratch:
        from executorch_optimum.export import ExportError, ExportOptions, export_model

        options = ExportOptions(
            model_dir=stage_checkpoint(args.checkpoint, scratch / "checkpoint"),
            output=args.output,
            report=args.report,
            task=args.task,
            qlinear=args.qlinear,
            qlinear_group_size=args.qlinear_group_size,
            qembedding=args.qembedding,
            qembedding_group_size=args.qembedding_group_size,
            max_seq_len=args.max_seq_len,
            max_context_len=args.max_context_len,
        )
        try:
            export_model(options, progress=lambda message: print(message, flush=True))
        except ExportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    report = json.loads(args.report.read_text())
    report["options"]["model_dir"] = args.checkpoint_label
    report["options"]["output"] = args.output.name
    tmp = args.report.with_name(args.report.name + ".partial")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
