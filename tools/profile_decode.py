"""`bazel run //tools:profile_decode -- --pte model.pte`: where a decode step's time goes (ETDump).

Runs the program with ExecuTorch's event tracing and prints, per operator kind (XNNPACK's
own operators included), its calls and microseconds per decode step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bazel run //tools:profile_decode --",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pte", type=Path, required=True, help="the program to profile")
    parser.add_argument(
        "--prompt_len", type=int, default=128, help="prompt tokens before decoding (default 128)"
    )
    parser.add_argument("--steps", type=int, default=32, help="traced decode steps (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="ExecuTorch threadpool size (default 2)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from executorch_optimum.runtime.process import enter_user_cwd, prepare_runtime

    enter_user_cwd()
    if not args.pte.is_file():
        print(f"error: no .pte at {args.pte}", file=sys.stderr)
        return 2
    prepare_runtime(args.threads)
    from executorch_optimum.runtime.decode_profile import profile_decode

    try:
        report = profile_decode(args.pte, args.prompt_len, args.steps)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
