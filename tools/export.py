"""`bazel run //tools:export`: export a Hugging Face checkpoint to an ExecuTorch .pte.

A thin command line over `executorch_optimum.export`. With no --model it exports the
embedded default (SmolLM2-135M's config, random weights) so it works on a fresh machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _workspace_path(path: str) -> Path:
    """Relative paths are relative to where the user ran `bazel run`, not the runfiles."""
    base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
    return Path(base, path).resolve() if not os.path.isabs(path) else Path(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bazel run //tools:export --",
        description="Export a Hugging Face checkpoint directory to an ExecuTorch .pte program "
        "(XNNPACK, our KV caches and custom SDPA).",
    )
    p.add_argument(
        "--model",
        metavar="DIR",
        help="checkpoint directory: config.json + *.safetensors "
        "(default: the embedded SmolLM2-135M config with RANDOM weights)",
    )
    p.add_argument(
        "--task",
        default="text-generation",
        help="what to export: text-generation (a causal LM) or image-text-to-text "
        "(Gemma3ForConditionalGeneration, LlavaForConditionalGeneration: methods token_embedding, "
        "vision_encoder, text_decoder; image preprocessing from the checkpoint's "
        "preprocessor_config.json when present) "
        "(default: %(default)s)",
    )
    p.add_argument("--recipe", default="xnnpack", help="lowering recipe (default: %(default)s)")
    p.add_argument(
        "--use_custom_sdpa",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ExecuTorch's fused SDPA op (default: on)",
    )
    p.add_argument(
        "--use_custom_kv_cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ExecuTorch's in-place KV caches, ring buffers for sliding layers (default: on)",
    )
    p.add_argument(
        "--qlinear",
        choices=["8da4w", "8da8w", "4w", "8w"],
        help="quantize linear layers (8da = 8-bit dynamic activations; 4w/8w = weight bits)",
    )
    p.add_argument(
        "--qlinear_group_size",
        type=int,
        default=32,
        metavar="N",
        help="group size for --qlinear; 0 = per channel (default: %(default)s)",
    )
    p.add_argument("--qembedding", choices=["8w", "4w"], help="quantize the embedding table")
    p.add_argument(
        "--qembedding_group_size",
        type=int,
        default=0,
        metavar="N",
        help="group size for --qembedding; 0 = per channel (default: %(default)s)",
    )
    p.add_argument(
        "--max_seq_len",
        type=int,
        default=128,
        metavar="N",
        help="most tokens one forward call takes, i.e. the prefill chunk (default: %(default)s)",
    )
    p.add_argument(
        "--max_context_len",
        type=int,
        metavar="N",
        help="tokens the KV cache holds, prompt + generation (default: model limit, at most 2048)",
    )
    p.add_argument("--dtype", default="float32", help="weights and activations dtype (default: %(default)s)")
    p.add_argument("--output_dir", metavar="DIR", help="write DIR/model.pte (default: current directory)")
    p.add_argument("--output", metavar="FILE", help="write exactly this .pte (overrides --output_dir)")
    p.add_argument("--report", metavar="FILE", help="also write the JSON report (metadata, delegation)")
    p.add_argument(
        "--allow_pickle",
        action="store_true",
        help="load *.bin/*.pt pickle weights (they can run code when loaded: trusted files only)",
    )
    p.add_argument(
        "--native_kernels",
        action="store_true",
        help="all attention on our C++ kernels (faster prefill; sliding layers get exact-size rings, "
        "no masks; with --qlinear, q, k and v computed in one linear); the runtime must load "
        "libeo_et_kernels.so (//tools:generate and //tools:benchmark do), so ExecuTorch's stock "
        "runners need it linked in",
    )
    p.add_argument(
        "--kv_cache_dtype",
        choices=["float32", "float16"],
        default="float32",
        help="the KV cache's element type (default: %(default)s); float16 halves the cache's memory and "
        "what each decode step reads from it, rounds every cached key and value (attention still sums "
        "in float32), and needs --native_kernels",
    )
    p.add_argument(
        "--full_logits",
        action="store_true",
        help="return logits for every position, not only the last (slower prefill)",
    )
    return p


def _options(args: argparse.Namespace, model_dir: Path):  # noqa: ANN202 (lazy import of ExportOptions)
    from executorch_optimum.export import ExportOptions

    if args.output:
        output = _workspace_path(args.output)
    else:
        output = _workspace_path(args.output_dir or ".") / "model.pte"
    return ExportOptions(
        model_dir=model_dir,
        output=output,
        task=args.task,
        recipe=args.recipe,
        use_custom_sdpa=args.use_custom_sdpa,
        use_custom_kv_cache=args.use_custom_kv_cache,
        qlinear=args.qlinear,
        qlinear_group_size=args.qlinear_group_size,
        qembedding=args.qembedding,
        qembedding_group_size=args.qembedding_group_size,
        max_seq_len=args.max_seq_len,
        max_context_len=args.max_context_len,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
        report=_workspace_path(args.report) if args.report else None,
        last_logits_only=not args.full_logits,
        native_kernels=args.native_kernels,
        kv_cache_dtype=args.kv_cache_dtype,
    )


def quiet_libraries() -> None:
    """Library chatter (deprecations, optional kernels that don't load) hides our progress."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    for name in ("torch", "torchao", "executorch", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    from executorch_optimum.export import ExportError, export_model, validate

    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="eo_export_") as scratch:
            if args.model:
                model_dir = _workspace_path(args.model)
            else:
                validate(_options(args, Path(scratch)), check_model_dir=False)
                from executorch_optimum.default_model import write_default_checkpoint

                _say(
                    "No --model given: exporting the embedded default, SmolLM2-135M's config with RANDOM "
                    "weights (the program runs, its text is gibberish)."
                )
                model_dir = write_default_checkpoint(Path(scratch) / "default")
            options = _options(args, model_dir)
            result = export_model(options, progress=_say)
            source = model_dir / "tokenizer.json"
            if source.is_file():
                # Beside the program, where //tools:generate and the C++ runners look for it.
                tokenizer = options.output.with_name("tokenizer.json")
                tokenizer.write_bytes(source.read_bytes())
                _say(f"tokenizer: {tokenizer}")
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (one line for the user; EO_TRACEBACK=1 shows the stack)
        if os.environ.get("EO_TRACEBACK"):
            raise
        print(
            f"error: export failed ({type(err).__name__}: {err}); no output written. "
            "Set EO_TRACEBACK=1 for the stack.",
            file=sys.stderr,
        )
        return 1
    _say("")
    _say(f"wrote {result.pte} ({result.size_bytes / 1e6:.1f} MB) in {time.perf_counter() - start:.0f} s")
    _say("metadata: " + ", ".join(f"{k}={v}" for k, v in sorted(result.metadata.items())))
    _say(result.delegation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
