"""The benchmark pipeline: checkpoints -> exports -> runtime, eager, roofline -> results."""

from __future__ import annotations

import functools
import gc
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from executorch_optimum.benchmark import compare, workdir
from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.exporters import Exporter, ExportMeasurement, library_versions
from executorch_optimum.benchmark.progress import Progress
from executorch_optimum.benchmark.results import BenchmarkResults, ContextPoint, ContextSweep, Row
from executorch_optimum.benchmark.roofline import (
    bytes_per_token_for_config,
    measure_copy_bandwidth,
    roofline_tokens_per_s,
)
from executorch_optimum.benchmark.variants import get_variant
from executorch_optimum.benchmark.zoo import config_path

CONTEXT_GRID = (128, 512, 1024, 2048)
SWEEP_STEPS = 16


@dataclass
class BenchmarkConfig:
    models: list[str]
    variants: list[str]
    work_dir: Path
    plot_models: list[str] = field(default_factory=list)
    prompt_len: int = 128
    new_tokens: int = 128
    threads: int = 2
    repeats: int = 3
    prefill_calls: int = 5
    profile_steps: int = 16  # traced decode steps per program of a comparison (0: none)
    fresh: frozenset[str] = frozenset()  # names of the exporters that re-export despite a cache hit
    eager: bool = True
    context_grid: tuple[int, ...] = CONTEXT_GRID

    def settings(self, exporters: Sequence[Exporter]) -> dict:
        return {
            "models": self.models,
            "variants": self.variants,
            "plot_models": self.plot_models,
            "prompt_len": self.prompt_len,
            "new_tokens": self.new_tokens,
            "threads": self.threads,
            "repeats": self.repeats,
            "prefill_calls": self.prefill_calls,
            "exporters": [e.name for e in exporters],
            "context_grid": list(self.context_grid),
        }


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version()}
    info.update(library_versions("torch", "executorch", "torchao", "transformers"))
    return info


class Benchmark:
    def __init__(self, config: BenchmarkConfig, exporters: Sequence[Exporter], progress: Progress) -> None:
        if not exporters:
            raise BenchmarkError("no exporter to benchmark")
        self.config = config
        self.exporters = list(exporters)
        self.progress = progress
        self._checkpoints: dict[str, tuple[Path, str]] = {}

    def checkpoint(self, model: str) -> tuple[Path, str]:
        if model not in self._checkpoints:
            self._checkpoints[model] = workdir.ensure_checkpoint(
                self.config.work_dir, model, config_path(model), self.progress
            )
        return self._checkpoints[model]

    def exports(self, model: str, variant: str) -> list[ExportMeasurement]:
        checkpoint_dir, key = self.checkpoint(model)
        measured = []
        for exporter in self.exporters:
            with self.progress.phase(f"{model} {variant} [{exporter.name}]: export"):
                measured.append(
                    workdir.cached_export(
                        self.config.work_dir,
                        exporter,
                        model,
                        variant,
                        checkpoint_dir,
                        key,
                        self.progress,
                        fresh=exporter.name in self.config.fresh,
                    )
                )
        return measured

    def run(self) -> BenchmarkResults:
        from executorch_optimum.runtime.threads import configure_threads

        cfg = self.config
        if any(exporter.needs_our_kernels for exporter in self.exporters):
            from executorch_optimum import kernels

            kernels.load_et_kernels()
        threads = configure_threads(cfg.threads)
        if threads != cfg.threads:
            self.progress(f"warning: ExecuTorch threadpool has {threads} threads, asked for {cfg.threads}")
        bandwidth = self._bandwidth()
        rows: list[Row] = []
        for model in cfg.models:
            rows += self._model_rows(model)
        bandwidth = bandwidth.best(self._bandwidth())  # the machine's load may have changed
        for row in rows:
            row.roofline_tokens_per_s = roofline_tokens_per_s(bandwidth, row.bytes_per_token)
            row.read_roofline_tokens_per_s = roofline_tokens_per_s(bandwidth, row.bytes_per_token, read=True)
        ratios = []
        for other in self.exporters[1:]:
            ratios += compare.ratio_rows(rows, self.exporters[0].name, other.name)
        sweeps = []
        for model in cfg.plot_models:
            sweeps += self._context_sweeps(model, cfg.variants[0])
        return BenchmarkResults(
            settings=cfg.settings(self.exporters),
            machine=machine_info(),
            bandwidth_gb_per_s=bandwidth.gb_per_s,
            bandwidth_convention=bandwidth.convention,
            read_bandwidth_gb_per_s=bandwidth.read_gb_per_s,
            rows=rows,
            ratios=ratios,
            context_sweeps=sweeps,
        )

    def _bandwidth(self):  # noqa: ANN202 (roofline.Bandwidth)
        threads = self.config.threads
        with self.progress.phase(f"memory bandwidth ({threads} threads)"):
            bandwidth = measure_copy_bandwidth(threads)
        self.progress(
            f"copy {bandwidth.gb_per_s:.1f} GB/s ({bandwidth.convention}), read {bandwidth.read_gb_per_s:.1f} GB/s"
        )
        return bandwidth

    def _model_rows(self, model: str) -> list[Row]:
        from executorch_optimum.benchmark.eager_speed import load_eager_model, measure_eager
        from executorch_optimum.benchmark.runtime_speed import (
            PteBench,
            make_prompt,
            measure_in_both_load_orders,
        )

        cfg = self.config
        checkpoint_dir, _ = self.checkpoint(model)
        vocab_size = json.loads((checkpoint_dir / "config.json").read_text())["vocab_size"]
        prompt = make_prompt(cfg.prompt_len, vocab_size)
        exports = {variant: self.exports(model, variant) for variant in cfg.variants}

        eager = None
        if cfg.eager:
            with self.progress.phase(f"{model}: eager transformers fp32 ({cfg.repeats} repeats)"):
                eager_model = load_eager_model(checkpoint_dir)
                eager = measure_eager(
                    eager_model,
                    prompt,
                    cfg.new_tokens,
                    cfg.threads,
                    cfg.repeats,
                    on_run=lambda line: self.progress(f"  {model} eager {line}"),
                )
                del eager_model
                gc.collect()
            self.progress(
                f"{model} eager: prefill {eager.prefill_stat().format()} tok/s, "
                f"decode {eager.decode_stat().format()} tok/s"
            )

        rows = []
        for variant, measured in exports.items():
            weights = bytes_per_token_for_config(checkpoint_dir, get_variant(variant))["total"]
            with self.progress.phase(f"{model} {variant}: ExecuTorch runtime ({cfg.repeats} repeats)"):
                loaders = [
                    functools.partial(PteBench, m.pte, prompt, cfg.new_tokens, cfg.prefill_calls)
                    for m in measured
                ]
                speeds = measure_in_both_load_orders(
                    loaders,
                    cfg.repeats,
                    on_run=lambda line, v=variant: self.progress(f"  {model} {v} {line}"),
                )
            profiles = self._decode_profiles(model, variant, measured)
            for m, speed, profile in zip(measured, speeds, profiles, strict=True):
                self.progress(
                    f"{model} {variant} [{m.exporter}]: prefill {speed.prefill_stat().format()} tok/s, "
                    f"decode {speed.decode_stat().format()} tok/s "
                    f"(median step {speed.decode_step_stat().format()})"
                )
                rows.append(
                    Row(
                        model=model,
                        variant=variant,
                        exporter=m.exporter,
                        export=m,
                        prefill_tokens_per_s=speed.prefill_tokens_per_s,
                        decode_tokens_per_s=speed.decode_tokens_per_s,
                        decode_step_tokens_per_s=speed.decode_step_tokens_per_s,
                        prefill_chunk=speed.prefill_chunk,
                        bytes_per_token=weights,
                        roofline_tokens_per_s=float("nan"),  # set when the run ends
                        eager_prefill_tokens_per_s=eager.prefill_tokens_per_s if eager else [],
                        eager_decode_tokens_per_s=eager.decode_tokens_per_s if eager else [],
                        tokens_match_eager=(speed.tokens == eager.tokens)
                        if eager and variant == "fp32"
                        else None,
                        decode_profile_us=profile,
                    )
                )
        return rows

    def _decode_profiles(self, model: str, variant: str, measured: list) -> list[dict[str, float]]:
        """Each compared program's traced decode step (runtime.decode_profile), for the Targets'
        decode notes; empty dicts without a comparison or with profile_steps 0."""
        cfg = self.config
        if len(measured) < 2 or cfg.profile_steps <= 0:
            return [{} for _ in measured]
        from executorch_optimum.runtime.decode_profile import profile_decodes

        with self.progress.phase(f"{model} {variant}: traced decode steps ({cfg.profile_steps}, in turns)"):
            try:
                profiles = profile_decodes([m.pte for m in measured], cfg.prompt_len, cfg.profile_steps)
            except ValueError as err:  # e.g. prompt + steps past a program's context
                self.progress(f"  {model} {variant}: no decode profiles ({err})")
                return [{} for _ in measured]
            finally:
                gc.collect()
        return [profile.breakdown() for profile in profiles]

    def _context_sweeps(self, model: str, variant: str) -> list[ContextSweep]:
        from executorch_optimum.benchmark.runtime_speed import (
            PteBench,
            context_positions,
            make_prompt,
            measure_context_sweep,
        )

        cfg = self.config
        measured = self.exports(model, variant)
        checkpoint_dir, _ = self.checkpoint(model)
        vocab_size = json.loads((checkpoint_dir / "config.json").read_text())["vocab_size"]
        prompt = make_prompt(16, vocab_size)
        with self.progress.phase(f"{model} {variant}: decode speed vs context"):
            benches = [PteBench(m.pte, prompt, 1) for m in measured]
            max_context = min(b.metadata.max_context_len for b in benches)
            positions = context_positions(max_context, SWEEP_STEPS, cfg.context_grid)
            if not positions:
                raise BenchmarkError(f"{model}: context {max_context} too short for a sweep")
            stats = measure_context_sweep(benches, positions, SWEEP_STEPS, cfg.repeats)
        sweeps = []
        for m, bench, per_position in zip(measured, benches, stats, strict=True):
            points = [ContextPoint(p, s) for p, s in per_position.items()]
            self.progress(
                f"{model} {variant} [{m.exporter}]: "
                + ", ".join(f"@{p.position} {p.decode_tokens_per_s.median:.1f}" for p in points)
                + " tok/s"
            )
            window = bench.metadata.sliding_window or _config_window(checkpoint_dir)
            sweeps.append(ContextSweep(model, variant, m.exporter, window, max_context, points))
        return sweeps


def _config_window(checkpoint_dir: Path) -> int | None:
    config = json.loads((checkpoint_dir / "config.json").read_text())
    window = config.get("sliding_window")
    uses_window = (
        "sliding_attention" in config.get("layer_types", []) or config.get("model_type") == "mistral"
    )
    return int(window) if window and uses_window else None
