"""`generate` command line: load a .pte, generate from a prompt, print text and tokens/s.

`//tools:generate` is a thin wrapper around `main`. Bad input gets one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE_ERROR = 2


class CliError(Exception):
    """A user mistake, reported as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generate", description="Generate text from an ExecuTorch .pte with the ExecuTorch runtime."
    )
    parser.add_argument("--pte", required=True, type=Path, help="the program to run")
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="prompt text (needs a tokenizer)")
    prompt.add_argument("--prompt_ids", help="comma-separated prompt token ids, e.g. 1,15,27")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer.json, or a directory holding one (default: next to the .pte, if present)",
    )
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def _find_tokenizer(args: argparse.Namespace):  # noqa: ANN202 (tokenizers.Tokenizer, imported lazily)
    candidate = args.tokenizer
    if candidate is None:
        beside = args.pte.parent / "tokenizer.json"
        if not beside.is_file():
            return None
        candidate = beside
    if candidate.is_dir():
        candidate = candidate / "tokenizer.json"
    if not candidate.is_file():
        raise CliError(f"no tokenizer at {candidate}")
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(candidate))
    except Exception as err:  # the tokenizers library raises its own exception types
        raise CliError(f"cannot read tokenizer {candidate}: {err}") from None


def _prompt_ids(args: argparse.Namespace, tokenizer: object) -> list[int]:
    if args.prompt_ids is not None:
        try:
            ids = [int(part) for part in args.prompt_ids.split(",") if part.strip()]
        except ValueError:
            raise CliError(
                f"--prompt_ids must be comma-separated integers, got {args.prompt_ids!r}"
            ) from None
    else:
        if tokenizer is None:
            raise CliError("--prompt needs a tokenizer: pass --tokenizer (or use --prompt_ids)")
        ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise CliError("the prompt is empty")
    return ids


def run(argv: Sequence[str] | None = None) -> dict:
    """Parses `argv`, generates, and returns what `main` prints (raises CliError on bad input)."""
    args = _parser().parse_args(argv)
    if not args.pte.is_file():
        raise CliError(f"no .pte at {args.pte}")
    if args.max_new_tokens < 1:
        raise CliError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise CliError("--temperature must be >= 0 and --top_p in (0, 1]")
    tokenizer = _find_tokenizer(args)
    prompt = _prompt_ids(args, tokenizer)

    from executorch_optimum.runtime.generator import Generator

    try:
        generator = Generator(args.pte)
    except (RuntimeError, ValueError) as err:
        raise CliError(f"cannot load {args.pte}: {err}") from None
    vocab = generator.metadata.vocab_size
    if vocab is not None and any(not 0 <= t < vocab for t in prompt):
        raise CliError(f"prompt ids must be in [0, {vocab}) for this program")
    try:
        result = generator.generate(
            prompt, args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    return {
        "prompt_ids": prompt,
        "tokens": result.tokens,
        "text": tokenizer.decode(result.tokens) if tokenizer is not None else None,
        "stop_reason": result.stop_reason,
        "stats": result.stats.to_dict(),
        "summary": result.stats.summary(),
        "json": args.json,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints the generation (text or ids) on stdout and the stats on stderr."""
    try:
        out = run(argv)
    except CliError as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    if out.pop("json"):
        print(json.dumps(out, sort_keys=True))
        return 0
    print(out["text"] if out["text"] is not None else " ".join(map(str, out["tokens"])))
    print(f"[{out['stop_reason']}] {out['summary']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
