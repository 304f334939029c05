"""`generate` command line: load a .pte, generate from a prompt, print text and tokens/s.

`//tools:generate` is a thin wrapper around `main`. Bad input gets one line on stderr and exit
status 2, never a traceback.

A `.pte` with the multimodal methods (`token_embedding`, `text_decoder`, `vision_encoder`;
`--task image-text-to-text`) runs on `MultimodalGenerator` (greedy), with or without
`--image FILE` (repeatable). Image tokens go where the model's processor puts them: each image
placeholder of the prompt (in text, or its id in `--prompt_ids`) becomes, for Gemma 3,
`"\\n\\n" <start_of_image> <image_soft_token> * tokens_per_image <end_of_image> "\\n\\n"` (the
"\\n\\n" only with a tokenizer) and, for LLaVA, `<image> * tokens_per_image`; a prompt without
placeholders gets one per image at its start, as the chat templates place an image before
the text. `--image` on a text-only `.pte` is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from executorch_optimum.runtime.generator import GenerationStats

USAGE_ERROR = 2
# ExecuTorch's multimodal method names (executorch/extension/llm/runner/constants.h).
TOKEN_EMBEDDING, VISION_ENCODER, TEXT_DECODER = "token_embedding", "vision_encoder", "text_decoder"


class CliError(Exception):
    """A user mistake, reported as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bazel run //tools:generate --",
        description="Generate text from an ExecuTorch .pte with the ExecuTorch runtime.",
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
    parser.add_argument(
        "--max_new_tokens",
        type=int,
        default=32,
        help="stop after this many new tokens (default 32); eos stops earlier",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument(
        "--top_p",
        type=float,
        default=1.0,
        help="nucleus sampling: keep the most likely tokens up to this mass (default 1 = all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0; greedy ignores it)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="ExecuTorch threadpool size (default: ExecuTorch's, one per core); torch keeps one "
        "thread either way (see executorch_optimum/runtime/threads.py)",
    )
    parser.add_argument(
        "--image",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="an image (PNG, JPEG, ..., PPM, .npy) for an image-text-to-text .pte; repeat for several. "
        "The prompt's image placeholders (Gemma 3: <start_of_image>, LLaVA: <image>) take them in "
        "order (none: images go first)",
    )
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
    from executorch_optimum.runtime.threads import configure_threads

    try:
        configure_threads(args.threads)
    except ValueError as err:
        raise CliError(f"--{err}") from None
    tokenizer = _find_tokenizer(args)
    methods = _method_names(args.pte)
    if {TOKEN_EMBEDDING, TEXT_DECODER} <= methods:
        return _run_multimodal(args, tokenizer)
    if args.image:
        raise CliError(
            f"--image needs an image-text-to-text .pte (methods {TOKEN_EMBEDDING}, {VISION_ENCODER}, "
            f"{TEXT_DECODER}; export with --task image-text-to-text); {args.pte} is text-only "
            f"(methods: {', '.join(_program_methods(methods))})"
        )
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
    return _output(args, tokenizer, prompt, result.tokens, result.stop_reason, result.stats)


def _output(
    args: argparse.Namespace,
    tokenizer: object,
    prompt: list[int],
    tokens: list[int],
    stop_reason: str,
    stats: GenerationStats,
) -> dict:
    return {
        "prompt_ids": prompt,
        "tokens": tokens,
        "text": tokenizer.decode(tokens) if tokenizer is not None else None,
        "stop_reason": stop_reason,
        "stats": stats.to_dict(),
        "summary": stats.summary(),
        "json": args.json,
    }


def _program_methods(methods: set[str]) -> list[str]:
    """The methods that compute, without the runner-metadata constants."""
    from executorch_optimum.runtime.metadata import KNOWN_KEYS

    return sorted(m for m in methods if m not in KNOWN_KEYS and not m.startswith(("get_", "use_")))


def _method_names(pte: Path) -> set[str]:
    from executorch.runtime import Runtime

    try:
        return set(Runtime.get().load_program(pte).method_names)
    except (RuntimeError, ValueError) as err:
        raise CliError(f"cannot load {pte}: {err}") from None


def _expand_text(prompt: str, tokenizer: object, generator: object, num_images: int) -> str:
    """The prompt text as Gemma 3's processor expands it, or unchanged if the tokenizer lacks
    the image tokens (then `expand_image_placeholders` works on the ids)."""
    boi, image, eoi = (
        tokenizer.id_to_token(i) if i is not None else None
        for i in (generator.boi_token_id, generator.image_token_id, generator.eoi_token_id)
    )
    if not (boi and image and eoi) or not generator.tokens_per_image:
        return prompt
    if [tokenizer.token_to_id(t) for t in (boi, image, eoi)] != [
        generator.boi_token_id,
        generator.image_token_id,
        generator.eoi_token_id,
    ]:
        return prompt
    if image in prompt:  # already expanded by the user
        return prompt
    if boi not in prompt:
        prompt = boi * num_images + prompt
    elif prompt.count(boi) != num_images:
        raise CliError(
            f"the prompt has {prompt.count(boi)} {boi} placeholder(s) but {num_images} --image were given"
        )
    return prompt.replace(boi, f"\n\n{boi}{image * generator.tokens_per_image}{eoi}\n\n")


def _run_multimodal(args: argparse.Namespace, tokenizer: object) -> dict:
    from executorch_optimum.runtime.multimodal import (
        ImageError,
        MultimodalGenerator,
        expand_image_placeholders,
    )

    if args.temperature != 0:
        raise CliError("image-text-to-text generation is greedy only: use --temperature 0")
    try:
        generator = MultimodalGenerator(args.pte)
    except (RuntimeError, ValueError) as err:
        raise CliError(f"cannot load {args.pte}: {err}") from None
    if args.image and VISION_ENCODER not in generator.program.method_names:
        raise CliError(f"{args.pte} has no {VISION_ENCODER} method: it cannot take --image")
    pixels = []
    for path in args.image:
        try:
            pixels.append(generator.image_pixels(path))
        except ImageError as err:
            raise CliError(str(err)) from None
        except ValueError as err:
            raise CliError(f"{path}: {err}") from None
    if args.prompt is not None and args.image and tokenizer is not None:
        args.prompt = _expand_text(args.prompt, tokenizer, generator, len(args.image))
    prompt = _prompt_ids(args, tokenizer)
    vocab = generator.metadata.vocab_size
    special = {generator.image_token_id, generator.boi_token_id, generator.eoi_token_id}
    if vocab is not None and any(not 0 <= t < vocab for t in prompt if t not in special):
        raise CliError(f"prompt ids must be in [0, {vocab}) for this program")
    try:
        if generator.image_token_id is not None and generator.tokens_per_image:
            prompt = expand_image_placeholders(
                prompt,
                len(pixels),
                generator.image_token_id,
                generator.tokens_per_image,
                generator.boi_token_id,
                generator.eoi_token_id,
                generator.metadata.bos_id,
            )
        result = generator.generate(prompt, pixels, max_new_tokens=args.max_new_tokens)
    except ValueError as err:
        raise CliError(str(err)) from None
    return _output(args, tokenizer, prompt, result.tokens, result.stop_reason, result.stats)


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
