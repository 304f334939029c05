"""`bazel run //tools:compare_pte -- --pte before.pte --pte after.pte`: A/B of programs in one process.

Measures prefill and greedy decode tokens/s of every program with the benchmark's protocol,
the programs taking turns call by call, and prints each one's speeds and its paired ratios
to the first (median [min-max] over repeats). Use it to measure an exporter change: export
the same checkpoint before and after, then compare.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bazel run //tools:compare_pte --",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pte",
        type=Path,
        action="append",
        required=True,
        help="a program to compare; give two or more (the first is the ratios' baseline)",
    )
    parser.add_argument("--prompt_len", type=int, default=128, help="prompt tokens per run (default 128)")
    parser.add_argument("--new_tokens", type=int, default=128, help="decode steps per run (default 128)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each program (default 10)")
    parser.add_argument(
        "--prefill_calls",
        type=int,
        default=5,
        help="prefills per run, whose median is the run's prefill time (default 5, as the benchmark)",
    )
    parser.add_argument("--threads", type=int, default=2, help="ExecuTorch threadpool size (default 2)")
    parser.add_argument("--quiet", action="store_true", help="print only the table, not each run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from executorch_optimum.runtime.process import enter_user_cwd, prepare_runtime

    enter_user_cwd()
    missing = [str(p) for p in args.pte if not p.is_file()]
    if missing:
        print(f"error: no .pte at {', '.join(missing)}", file=sys.stderr)
        return 2
    prepare_runtime(args.threads)
    from executorch_optimum.benchmark.errors import BenchmarkError
    from executorch_optimum.benchmark.program_ab import compare_programs

    on_run = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        comparison = compare_programs(
            args.pte, args.prompt_len, args.new_tokens, args.repeats, args.prefill_calls, on_run=on_run
        )
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(comparison.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
