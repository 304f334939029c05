"""The benchmark's results: dataclasses, JSON round trip, Markdown, atomic output files."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.exporters import ExportMeasurement
from executorch_optimum.benchmark.stats import Stat
from executorch_optimum.benchmark.targets import TargetCheck, check_targets

SCHEMA_VERSION = 1


@dataclass
class Row:
    """One (model, variant, exporter): export cost, .pte size, runtime and eager speed, roofline."""

    model: str
    variant: str
    exporter: str
    export: ExportMeasurement
    prefill_tokens_per_s: list[float]  # per repeat, in run order
    decode_tokens_per_s: list[float]
    prefill_chunk: int
    bytes_per_token: int
    roofline_tokens_per_s: float
    eager_prefill_tokens_per_s: list[float] = field(default_factory=list)  # fp32 eager, per repeat
    eager_decode_tokens_per_s: list[float] = field(default_factory=list)
    tokens_match_eager: bool | None = None  # greedy tokens of the .pte == eager's (fp32 only)
    read_roofline_tokens_per_s: float | None = None  # the same with the read bandwidth
    decode_step_tokens_per_s: list[float] = field(default_factory=list)  # 1 / median call, per repeat
    # A traced decode step (runtime.decode_profile's breakdown, us): where the time goes.
    decode_profile_us: dict[str, float] = field(default_factory=dict)

    @property
    def decode_vs_roofline(self) -> float:
        return Stat.of(self.decode_tokens_per_s).median / self.roofline_tokens_per_s

    @property
    def decode_vs_read_roofline(self) -> float | None:
        if not self.read_roofline_tokens_per_s:
            return None
        return Stat.of(self.decode_tokens_per_s).median / self.read_roofline_tokens_per_s


@dataclass
class Ratio:
    """ours / theirs for one metric: per-repeat ratios of interleaved runs, or one value."""

    metric: str
    stat: Stat
    higher_is_better: bool


@dataclass
class RatioRow:
    model: str
    variant: str
    numerator: str  # exporter names
    denominator: str
    ratios: list[Ratio]


@dataclass
class ContextPoint:
    position: int
    decode_tokens_per_s: Stat


@dataclass
class ContextSweep:
    model: str
    variant: str
    exporter: str
    sliding_window: int | None
    max_context_len: int
    points: list[ContextPoint]


@dataclass
class BenchmarkResults:
    settings: dict[str, Any]
    machine: dict[str, Any]
    bandwidth_gb_per_s: float
    bandwidth_convention: str
    rows: list[Row] = field(default_factory=list)
    read_bandwidth_gb_per_s: float | None = None
    ratios: list[RatioRow] = field(default_factory=list)
    context_sweeps: list[ContextSweep] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION


# ---- JSON ------------------------------------------------------------------------------


def to_json(results: BenchmarkResults) -> str:
    return json.dumps(dataclasses.asdict(results), indent=2, sort_keys=True) + "\n"


def _build(tp: Any, value: Any) -> Any:  # noqa: ANN401 (generic decoder)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(inner, value)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return [_build(inner, v) for v in value]
    if origin is dict:
        _, inner = typing.get_args(tp)
        return {k: _build(inner, v) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: _build(hints[k], v) for k, v in value.items() if k in known})
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_json(text: str) -> BenchmarkResults:
    data = json.loads(text)
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BenchmarkError(f"results schema {data.get('schema_version')} is not {SCHEMA_VERSION}")
    return _build(BenchmarkResults, data)


# ---- Markdown --------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _pair(first: str, second: float | None, fmt: str) -> str:
    return first if second is None else f"{first} / {fmt.format(second)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def rows_table(results: BenchmarkResults) -> str:
    header = [
        "model",
        "variant",
        "exporter",
        "export wall s",
        "export CPU s",
        "export peak RSS MB",
        ".pte MB",
        "prefill tok/s",
        "decode tok/s",
        "decode tok/s (median step)",
        "eager prefill tok/s",
        "eager decode tok/s",
        "weights MB/token",
        "roofline tok/s (copy / read bw)",
        "decode / roofline (copy / read)",
        "greedy = eager",
    ]
    body = []
    for r in results.rows:
        e = r.export
        cached = " (cached)" if e.cached else ""
        eager_prefill = (
            Stat.of(r.eager_prefill_tokens_per_s).format() if r.eager_prefill_tokens_per_s else "–"
        )
        eager_decode = Stat.of(r.eager_decode_tokens_per_s).format() if r.eager_decode_tokens_per_s else "–"
        body.append(
            [
                r.model,
                r.variant,
                r.exporter,
                f"{e.wall_s:.1f}{cached}",
                f"{e.cpu_s:.1f}",
                f"{e.peak_rss_bytes / 1e6:.0f}",
                _mb(e.pte_bytes),
                Stat.of(r.prefill_tokens_per_s).format(),
                Stat.of(r.decode_tokens_per_s).format(),
                Stat.of(r.decode_step_tokens_per_s).format() if r.decode_step_tokens_per_s else "–",
                eager_prefill,
                eager_decode,
                _mb(r.bytes_per_token),
                _pair(f"{r.roofline_tokens_per_s:.1f}", r.read_roofline_tokens_per_s, "{:.1f}"),
                _pair(f"{100 * r.decode_vs_roofline:.0f}%", r.decode_vs_read_roofline, "{:.0%}"),
                {True: "yes", False: "NO", None: "–"}[r.tokens_match_eager],
            ]
        )
    return _table(header, body)


def ratios_table(results: BenchmarkResults) -> str:
    header = ["model", "variant", "ratio", "metric", "median [min–max]", "better is"]
    body = [
        [
            row.model,
            row.variant,
            f"{row.numerator} / {row.denominator}",
            ratio.metric,
            ratio.stat.format(digits=2),
            "higher" if ratio.higher_is_better else "lower",
        ]
        for row in results.ratios
        for ratio in row.ratios
    ]
    return _table(header, body)


def targets_table(checks: list[TargetCheck]) -> str:
    header = ["model", "variant", "exporter", "metric", "value", "target", "met", "short by", "note"]
    body = [
        [
            c.model,
            c.variant,
            c.exporter,
            c.target.metric,
            c.format_value(),
            c.target.describe(),
            "yes" if c.met else "NO",
            "–" if c.met else f"{c.shortfall:.2f}x",
            c.note or "–",
        ]
        for c in checks
    ]
    return _table(header, body)


def sweeps_table(results: BenchmarkResults) -> str:
    header = ["model", "variant", "exporter", "sliding window", "cache position", "decode tok/s"]
    body = [
        [
            s.model,
            s.variant,
            s.exporter,
            str(s.sliding_window) if s.sliding_window else "none",
            str(p.position),
            p.decode_tokens_per_s.format(),
        ]
        for s in results.context_sweeps
        for p in s.points
    ]
    return _table(header, body)


def to_markdown(results: BenchmarkResults, plot_name: str | None = None) -> str:
    s = results.settings
    parts = [
        "## Benchmark",
        "",
        f"Prompt {s.get('prompt_len')} tokens, {s.get('new_tokens')} greedy decode tokens, "
        f"{s.get('threads')} threads, {s.get('repeats')} repeats after a warm-up "
        "(speeds: median [min–max]). Random weights (fixed seed), zoo configs.",
        "",
        rows_table(results),
        "",
        "- export: our exporter in a child process (wall, user+sys CPU, peak RSS of that process); "
        "(cached) = measured when the cached export was made.",
        "- prefill tok/s: prompt tokens / time, in chunks of the program's get_max_seq_len "
        f"(ExecuTorch: per run the median of {s.get('prefill_calls', 1)} prefills); "
        "decode tok/s: single-token greedy calls / time; (median step): 1 / the median call of a run, "
        "which a preempted call does not move. eager = transformers fp32 on the same weights.",
        f"- roofline = bandwidth / weight bytes read per decoded token; copy bandwidth "
        f"{results.bandwidth_gb_per_s:.1f} GB/s [{results.bandwidth_convention}]"
        + (
            f", read bandwidth {results.read_bandwidth_gb_per_s:.1f} GB/s [bytes read by a sum over a buffer]"
            if results.read_bandwidth_gb_per_s
            else ""
        )
        + "; best of measurements before and after the runs. Weight bytes "
        "(fp32: every parameter, a tied embedding once; quantized: packed weights + group scales, "
        "lm_head quantized; a gathered embedding table is not counted; KV cache not counted).",
        "- greedy = eager: the .pte's greedy tokens equal eager transformers' (fp32 rows; "
        "quantized rows are not expected to match).",
    ]
    if results.ratios:
        parts += ["", "### Comparison", "", ratios_table(results)]
        checks = check_targets(results)
        if checks:
            met = sum(c.met for c in checks)
            parts += [
                "",
                "### Targets",
                "",
                f"{met} of {len(checks)} met. Ratios are medians of the comparison above; "
                "short by = the factor still missing.",
                "",
                targets_table(checks),
            ]
    if results.context_sweeps:
        parts += ["", "### Decode speed vs context", "", sweeps_table(results)]
        if plot_name:
            parts += ["", f"![decode tokens/s vs context]({plot_name})"]
    machine = ", ".join(f"{k} {v}" for k, v in sorted(results.machine.items()))
    parts += ["", f"Machine: {machine}."]
    return "\n".join(parts) + "\n"


# ---- files -----------------------------------------------------------------------------


def check_writable_dir(path: Path) -> Path:
    """Creates `path` if needed and proves it writable, before any long work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe."):
            pass
    except OSError as err:
        raise BenchmarkError(f"output directory is not writable: {path} ({err.strerror or err})") from None
    return path


def write_outputs(out_dir: Path, files: dict[str, bytes]) -> list[Path]:
    """Writes every file to a temporary sibling first, then renames them all into place."""
    check_writable_dir(out_dir)
    staged: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=out_dir)
            staged.append((name, Path(tmp)))
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
        for name, tmp in staged:
            os.replace(tmp, out_dir / name)
    except BaseException:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [out_dir / name for name in files]
