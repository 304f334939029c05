"""The exporter abstraction: a name, a cache key, and export(checkpoint, variant, out_dir).

`OurExporter` runs `executorch_optimum.export.export_model` in a child process and measures
that child (wall, CPU, peak RSS). Another exporter (optimum-executorch: `IncumbentExporter`
in `executorch_optimum.benchmark.incumbent`, when present) implements the same protocol.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.measure import child_environment, run_measured
from executorch_optimum.benchmark.variants import get_variant

Progress = Callable[[str], None]

# The package as imported (the child imports the same one): in Bazel runfiles, the tree of
# symlinks to exactly the sources the binary depends on.
PACKAGE_DIR = Path(__file__).parents[1]
# export_model's progress: "[load] done in 3.2 s"
_PHASE_DONE = re.compile(r"^\[([\w+-]+)\] done in ([0-9.]+) s$")


@dataclass
class ExportMeasurement:
    """What one export cost and produced. `pte` is absolute in memory, a file name on disk.

    cpu_s = user + sys of the export process (and the children it waited for); user_s and
    sys_s are the split when the exporter reports it."""

    exporter: str
    variant: str
    pte: str
    pte_bytes: int
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    user_s: float | None = None
    sys_s: float | None = None
    cached: bool = False
    phases: dict[str, float] = field(default_factory=dict)  # the exporter's own split, if any


def normalize_measurement(result: object, exporter: str, variant: str) -> ExportMeasurement:
    """An ExportMeasurement from what any exporter returned: ours, or an object with `pte`,
    `wall_s`, `peak_rss_bytes` and `cpu_s` (or `user_s` + `sys_s`), such as the incumbent's."""
    if isinstance(result, ExportMeasurement):
        return result
    pte = Path(result.pte)
    user_s, sys_s = getattr(result, "user_s", None), getattr(result, "sys_s", None)
    cpu_s = getattr(result, "cpu_s", None)
    if cpu_s is None:
        cpu_s = (user_s or 0.0) + (sys_s or 0.0)
    return ExportMeasurement(
        exporter=exporter,
        variant=variant,
        pte=str(pte),
        pte_bytes=pte.stat().st_size,
        wall_s=float(result.wall_s),
        cpu_s=float(cpu_s),
        peak_rss_bytes=int(result.peak_rss_bytes),
        user_s=user_s,
        sys_s=sys_s,
        phases=dict(getattr(result, "phases", {}) or {}),
    )


class Exporter(Protocol):
    """What the benchmark needs from an exporter (ours, optimum-executorch, ...)."""

    name: str  # shown in tables; also names its cache directory
    needs_our_kernels: bool  # its programs call our eo::* ops (the runtime loads them first)

    def cache_key(self) -> str:
        """Changes whenever the same checkpoint + variant could export differently
        (exporter source version, library versions, export settings)."""
        ...

    def export(self, checkpoint_dir: Path, variant: str, out_dir: Path, progress: Progress = print) -> object:
        """Exports `checkpoint_dir` as `variant` ("fp32", "8da4w") into the empty directory
        `out_dir`: a .pte inside it with `forward(tokens [1,S] int64, positions [S] int64) ->
        logits` and the runner metadata (get_max_seq_len, optionally get_max_context_len).
        Returns an ExportMeasurement, or any object `normalize_measurement` accepts; raises
        on failure (BenchmarkError, or any exception with a one-line message)."""
        ...


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


class ForeignExporter:
    """Wraps another team's exporter: its measurement normalised, its errors one line."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = str(inner.name)
        self.needs_our_kernels = False  # another team's programs use stock ExecuTorch ops

    def cache_key(self) -> str:
        try:
            return str(self.inner.cache_key())
        except Exception as err:  # noqa: BLE001 (e.g. its lock file missing: one line)
            raise BenchmarkError(f"{self.name}: {_first_line(err)}") from None

    def export(
        self, checkpoint_dir: Path, variant: str, out_dir: Path, progress: Progress = print
    ) -> ExportMeasurement:
        try:
            result = self.inner.export(checkpoint_dir, variant, out_dir, progress)
        except BenchmarkError:
            raise
        except Exception as err:  # noqa: BLE001 (any failure of a foreign exporter is one line)
            raise BenchmarkError(f"{self.name}: {_first_line(err)}") from None
        return normalize_measurement(result, self.name, variant)


def library_versions(*names: str) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def source_version(root: Path = PACKAGE_DIR, exclude: tuple[str, ...] = ("benchmark", "runtime")) -> str:
    """sha256 over the exporter's Python sources (this package minus `exclude`: the benchmark
    and the runtime never shape an exported program, so editing them keeps cached exports)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in exclude or "__pycache__" in rel.parts:
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


# The names executorch_optimum.export.KV_CACHE_DTYPES maps to torch dtypes (that module imports
# torch, which the benchmark's parent process must not load before it sets its thread settings).
KV_CACHE_DTYPES = ("float32", "float16")


class OurExporter:
    """executorch_optimum's exporter, in a child process (`export_child`)."""

    def __init__(
        self,
        max_seq_len: int = 128,
        max_context_len: int | None = None,
        native_kernels: bool = False,
        kv_cache_dtype: str = "float32",
    ) -> None:
        self.max_seq_len = max_seq_len
        self.max_context_len = max_context_len
        # All attention on our C++ kernels: the runtime that measures it loads libeo_et_kernels.so.
        self.native_kernels = native_kernels
        self.needs_our_kernels = native_kernels
        # float16 caches need our kernels (export_model refuses them otherwise).
        self.kv_cache_dtype = kv_cache_dtype
        self.name = ("ours+eo_kernels" if native_kernels else "ours") + (
            "" if kv_cache_dtype == "float32" else f"+kv_{kv_cache_dtype}"
        )
        # Hashed once: every export of one run is keyed by the same source version.
        self._source = source_version()

    def cache_key(self) -> str:
        return json.dumps(
            {
                "source": self._source,
                "versions": library_versions("torch", "executorch", "torchao", "transformers"),
                "max_seq_len": self.max_seq_len,
                "max_context_len": self.max_context_len,
                "native_kernels": self.native_kernels,
                "kv_cache_dtype": self.kv_cache_dtype,
            },
            sort_keys=True,
        )

    def export(
        self, checkpoint_dir: Path, variant: str, out_dir: Path, progress: Progress = print
    ) -> ExportMeasurement:
        spec = get_variant(variant)
        pte, report = out_dir / "model.pte", out_dir / "report.json"
        request = {
            "model_dir": str(checkpoint_dir),
            "output": str(pte),
            "report": str(report),
            "qlinear": spec.qlinear,
            "qlinear_group_size": spec.qlinear_group_size,
            "qembedding": spec.qembedding,
            "qembedding_group_size": spec.qembedding_group_size,
            "max_seq_len": self.max_seq_len,
            "max_context_len": self.max_context_len,
            "native_kernels": self.native_kernels,
            "kv_cache_dtype": self.kv_cache_dtype,
        }
        request_file = out_dir / "request.json"
        request_file.write_text(json.dumps(request, indent=2) + "\n")
        cmd = [sys.executable, "-m", "executorch_optimum.benchmark.export_child", str(request_file)]
        phases: dict[str, float] = {}

        def on_line(line: str) -> None:
            progress(f"  | {line}")
            done = _PHASE_DONE.match(line.strip())
            if done:
                phases[done.group(1)] = float(done.group(2))

        result = run_measured(cmd, env=child_environment(), on_line=on_line)
        if result.returncode != 0 or not pte.is_file():
            last = next((line for line in reversed(result.tail) if line.strip()), "no output")
            raise BenchmarkError(
                f"our exporter failed (exit {result.returncode}) for {checkpoint_dir}: {last}"
            )
        return ExportMeasurement(
            exporter=self.name,
            variant=variant,
            pte=str(pte),
            pte_bytes=pte.stat().st_size,
            wall_s=result.wall_s,
            cpu_s=result.cpu_s,
            user_s=result.user_s,
            sys_s=result.sys_s,
            peak_rss_bytes=result.peak_rss_bytes,
            phases=phases,
        )
