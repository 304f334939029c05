"""`bazel run //tools:benchmark`: the command line over `executorch_optimum.benchmark`."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.exporters import KV_CACHE_DTYPES, Exporter, ForeignExporter, OurExporter
from executorch_optimum.benchmark.variants import VARIANTS, parse_variant_list
from executorch_optimum.benchmark.workdir import DEFAULT_WORK_DIR
from executorch_optimum.benchmark.zoo import parse_model_list, zoo_models

DESCRIPTION = """\
Benchmark our ExecuTorch exporter on zoo models (random weights from a fixed seed):
export wall/CPU time and peak RSS, .pte size, ExecuTorch runtime prefill and decode
tokens/s, the eager transformers model on the same weights, and a memory-bandwidth
roofline. Prints a Markdown table; writes results.json, results.md and
decode_vs_context.png to --out_dir. Progress goes to stderr."""

EPILOG = """\
Variants: fp32 (float32); 8da4w (--qlinear 8da4w, group 32, --qembedding 8w).
Exports and checkpoints are cached in --work_dir, keyed by config, options and the
exporter's source version; a cached export reports the measurements made when it was built.
Example: bazel run //tools:benchmark -- --models smollm2_135m --variants fp32,8da4w"""

Factory = Callable[[argparse.Namespace], Exporter]


COMPARISONS = {
    # --compare name -> (module, class) of an exporter implementing exporters.Exporter
    "optimum-executorch": ("executorch_optimum.benchmark.incumbent", "IncumbentExporter"),
}


def _construct(cls: type, args: argparse.Namespace) -> object:
    """Passes the export settings the class accepts. Ours: max_seq_len = tokens per call,
    max_context_len = KV-cache length; an exporter without max_context_len (the incumbent,
    whose --max_seq_len is its context) gets the context as max_seq_len."""
    params = inspect.signature(cls).parameters
    kwargs: dict[str, object] = {}
    if "max_context_len" in params:
        kwargs["max_context_len"] = args.max_context_len
        if "max_seq_len" in params:
            kwargs["max_seq_len"] = args.max_seq_len
    elif "max_seq_len" in params:
        kwargs["max_seq_len"] = args.max_context_len
    if "cache_root" in params and args.incumbent_cache:
        kwargs["cache_root"] = _user_path(args.incumbent_cache)
    return cls(**kwargs)


def comparison_exporters() -> dict[str, Factory]:
    """Exporters `--compare` accepts here (those whose module imports)."""
    found: dict[str, Factory] = {}
    for key, (module_name, class_name) in COMPARISONS.items():
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        found[key] = lambda args, cls=cls: ForeignExporter(_construct(cls, args))
    return found


def _user_path(path: str) -> Path:
    """~ expanded; relative to where the user ran `bazel run`, not the runfiles."""
    expanded = Path(path).expanduser()
    if expanded.is_absolute():
        return expanded
    return Path(os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd()), expanded).resolve()


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bazel run //tools:benchmark --",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    zoo = ", ".join(zoo_models())
    p.add_argument(
        "--models",
        default="smollm2_135m",
        metavar="A,B",
        help=f"comma-separated zoo models (folders of models/: {zoo}) (default: %(default)s)",
    )
    p.add_argument(
        "--variants",
        default="fp32,8da4w",
        metavar="A,B",
        help=f"comma-separated export variants: {', '.join(VARIANTS)} (default: %(default)s)",
    )
    p.add_argument(
        "--plot_models",
        default="mistral_small,smollm2_135m",
        metavar="A,B",
        help="models for the decode-speed-vs-context plot, exported as the first variant; "
        "'' = no plot (default: %(default)s: an all-sliding-window (256) and a full-attention model)",
    )
    p.add_argument(
        "--work_dir",
        default=str(DEFAULT_WORK_DIR),
        metavar="DIR",
        help="cache of checkpoints and exports (default: %(default)s)",
    )
    p.add_argument(
        "--out_dir", metavar="DIR", help="where results.json/.md and the plot go (default: WORK_DIR/results)"
    )
    p.add_argument(
        "--fresh",
        nargs="?",
        const="all",
        choices=FRESH_CHOICES,
        metavar="WHICH",
        help="re-export even when a cached export matches: 'all' (the default when WHICH is left "
        "out), 'ours', or 'compared' (the --compare exporters only, e.g. to re-measure their export "
        "cost on a quiet machine)",
    )
    p.add_argument(
        "--prompt_len",
        type=_positive,
        default=128,
        metavar="N",
        help="prompt tokens for prefill, fed in chunks of the program's get_max_seq_len (default: %(default)s)",
    )
    p.add_argument(
        "--new_tokens",
        type=_positive,
        default=128,
        metavar="N",
        help="greedy decode steps timed (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=_positive,
        default=2,
        metavar="N",
        help="ExecuTorch threadpool size, torch threads for eager and the bandwidth copy (default: %(default)s)",
    )
    p.add_argument(
        "--repeats",
        type=_positive,
        default=3,
        metavar="N",
        help="timed runs after one warm-up (default: %(default)s)",
    )
    p.add_argument(
        "--prefill_calls",
        type=_positive,
        default=5,
        metavar="N",
        help="prompt prefills per run, from position 0 each; the run's prefill time is their "
        "median (default: %(default)s)",
    )
    p.add_argument(
        "--profile_steps",
        type=_non_negative,
        default=16,
        metavar="N",
        help="with --compare: decode steps each program runs once more with ExecuTorch's event "
        "tracing, after the timed runs, to say in the Targets where a decode step goes; 0 skips "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max_seq_len",
        type=_positive,
        default=128,
        metavar="N",
        help="export: most tokens per forward call (default: %(default)s)",
    )
    p.add_argument(
        "--max_context_len",
        type=_positive,
        metavar="N",
        help="export: KV-cache length (default: the model's limit, at most 2048)",
    )
    p.add_argument(
        "--native_kernels",
        action="store_true",
        help="export ours with all attention on our C++ kernels (exporter 'ours+eo_kernels'; the "
        "runtime here loads libeo_et_kernels.so, ExecuTorch's stock runners would need it linked); "
        "ratios are then that program's",
    )
    p.add_argument(
        "--kv_cache_dtype",
        choices=KV_CACHE_DTYPES,
        default="float32",
        help="export ours with KV caches of this type (float16: half the cache memory and bytes "
        "read per decode step; needs --native_kernels; exporter 'ours+eo_kernels+kv_float16') "
        "(default: %(default)s)",
    )
    p.add_argument("--no_eager", action="store_true", help="skip the eager transformers baseline")
    p.add_argument(
        "--compare",
        metavar="EXPORTER",
        action="append",
        default=[],
        help="also export with EXPORTER (repeatable) and report ours/theirs ratios, runtime runs "
        "interleaved (available here: " + (", ".join(comparison_exporters()) or "none") + ")",
    )
    p.add_argument(
        "--incumbent_cache",
        metavar="DIR",
        help="where --compare optimum-executorch keeps its own venv "
        "(default: the incumbent's, ~/.cache/executorch_optimum/incumbent)",
    )
    return p


FRESH_CHOICES = ("all", "ours", "compared")


def fresh_exporters(which: str | None, exporters: Sequence[Exporter]) -> frozenset[str]:
    """Names of the exporters `--fresh WHICH` re-exports with (ours comes first in `exporters`)."""
    if which is None:
        return frozenset()
    chosen = {"all": exporters, "ours": exporters[:1], "compared": exporters[1:]}[which]
    return frozenset(exporter.name for exporter in chosen)


def _plan(args: argparse.Namespace):  # noqa: ANN202 (returns config, exporters, out_dir)
    from executorch_optimum.benchmark.results import check_writable_dir
    from executorch_optimum.benchmark.runner import BenchmarkConfig

    models = parse_model_list(args.models)
    variants = parse_variant_list(args.variants)
    plot_models = parse_model_list(args.plot_models, "--plot_models") if args.plot_models.strip() else []
    if args.max_context_len is not None and args.max_context_len < args.max_seq_len:
        raise BenchmarkError(
            f"--max_context_len ({args.max_context_len}) must be >= --max_seq_len ({args.max_seq_len})"
        )
    if args.max_context_len is not None and args.prompt_len + args.new_tokens > args.max_context_len:
        raise BenchmarkError(
            f"--prompt_len + --new_tokens ({args.prompt_len + args.new_tokens}) exceeds "
            f"--max_context_len ({args.max_context_len})"
        )
    if args.kv_cache_dtype != "float32" and not args.native_kernels:
        raise BenchmarkError(f"--kv_cache_dtype {args.kv_cache_dtype} needs --native_kernels")
    exporters: list[Exporter] = [
        OurExporter(
            max_seq_len=args.max_seq_len,
            max_context_len=args.max_context_len,
            native_kernels=args.native_kernels,
            kv_cache_dtype=args.kv_cache_dtype,
        )
    ]
    available = comparison_exporters()
    for name in dict.fromkeys(args.compare):
        if name not in available:
            raise BenchmarkError(
                f"unknown exporter '{name}' for --compare (available: {', '.join(available) or 'none installed'})"
            )
        exporters.append(available[name](args))
    work_dir = check_writable_dir(_user_path(args.work_dir))
    out_dir = check_writable_dir(_user_path(args.out_dir) if args.out_dir else work_dir / "results")
    config = BenchmarkConfig(
        models=models,
        variants=variants,
        work_dir=work_dir,
        plot_models=plot_models,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        threads=args.threads,
        repeats=args.repeats,
        prefill_calls=args.prefill_calls,
        profile_steps=args.profile_steps,
        fresh=fresh_exporters(args.fresh, exporters),
        eager=not args.no_eager,
    )
    return config, exporters, out_dir


PLOT_FILE = "decode_vs_context.png"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from executorch_optimum.runtime.threads import single_thread_openmp

    # Before anything imports torch (planning does): set later, MKL's OpenMP workers inside
    # ExecuTorch's attention kernel spin against the threadpool and prefill runs at half speed.
    # The export children do not inherit it.
    single_thread_openmp()
    try:
        config, exporters, out_dir = _plan(args)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from executorch_optimum.benchmark.progress import Progress
    from executorch_optimum.benchmark.results import to_json, to_markdown, write_outputs
    from executorch_optimum.benchmark.runner import Benchmark

    progress = Progress()
    try:
        results = Benchmark(config, exporters, progress).run()
        files = {"results.json": to_json(results).encode()}
        plot_name = None
        if results.context_sweeps:
            from executorch_optimum.benchmark.plot import plot_context_sweeps

            plot_name = PLOT_FILE
            files[PLOT_FILE] = plot_context_sweeps(results.context_sweeps)
        markdown = to_markdown(results, plot_name)
        files["results.md"] = markdown.encode()
        written = write_outputs(out_dir, files)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown)
    progress(f"wrote {', '.join(str(p) for p in written)}")
    return 0
