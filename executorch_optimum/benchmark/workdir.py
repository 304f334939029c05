"""The work directory: random checkpoints and exports, cached by content keys.

    WORK/checkpoints/<model>-<key>/      config.json model.safetensors tokenizer.json
    WORK/exports/<exporter>/<model>-<variant>-<key>/   model.pte + export.json (+ exporter files)

A checkpoint's key hashes its config, seed and generator source; an export's key hashes the
checkpoint key, the variant and the exporter's `cache_key()` (source version, library
versions, settings). Entries are built in a `.partial` sibling and renamed into place, so an
interrupted run never leaves an entry that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.exporters import (
    Exporter,
    ExportMeasurement,
    library_versions,
    normalize_measurement,
)

DEFAULT_WORK_DIR = Path("~/.cache/executorch_optimum/benchmark")
SEED = 0
MEASUREMENT_FILE = "export.json"
Progress = Callable[[str], None]


def _key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _checkpoint_source() -> str:
    from executorch_optimum.default_model import checkpoint

    package = Path(checkpoint.__file__).resolve().parent
    return "".join((package / name).read_text() for name in ("checkpoint.py", "__init__.py"))


def _publish(staging: Path, entry: Path) -> None:
    """Replaces `entry` with the finished `staging` directory."""
    staging.chmod(0o755)  # mkdtemp makes it private
    if entry.exists():
        shutil.rmtree(entry)
    os.replace(staging, entry)


def _staging(entry: Path) -> Path:
    entry.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".partial", dir=entry.parent))


def ensure_checkpoint(
    work_dir: Path, model: str, config_json: Path, progress: Progress, seed: int = SEED
) -> tuple[Path, str]:
    """The cached random checkpoint of `config_json`; returns (directory, key)."""
    from executorch_optimum.default_model.checkpoint import CHECKPOINT_FILES, make_checkpoint

    key = _key(
        config_json.read_text(),
        str(seed),
        _checkpoint_source(),
        json.dumps(library_versions("transformers", "torch")),
    )
    entry = work_dir / "checkpoints" / f"{model}-{key}"
    if all((entry / name).is_file() for name in CHECKPOINT_FILES):
        progress(f"{model}: checkpoint cached ({entry})")
        return entry, key
    staging = _staging(entry)
    try:
        scratch = staging / "scratch"
        scratch.mkdir()
        progress(f"{model}: writing a random checkpoint (seed {seed}) ...")
        make_checkpoint(config_json, staging / "checkpoint", seed, scratch)
        shutil.rmtree(scratch)
        _publish(staging / "checkpoint", entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry, key


def export_entry(work_dir: Path, exporter: Exporter, model: str, variant: str, checkpoint_key: str) -> Path:
    key = _key(exporter.name, exporter.cache_key(), checkpoint_key, variant)
    return work_dir / "exports" / _safe(exporter.name) / f"{model}-{variant}-{key}"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "exporter"


def load_measurement(entry: Path) -> ExportMeasurement | None:
    path = entry / MEASUREMENT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        measurement = ExportMeasurement(**data)
    except (ValueError, TypeError):
        return None
    pte = entry / measurement.pte
    if not pte.is_file():
        return None
    measurement.pte = str(pte)
    measurement.cached = True
    return measurement


def cached_export(
    work_dir: Path,
    exporter: Exporter,
    model: str,
    variant: str,
    checkpoint_dir: Path,
    checkpoint_key: str,
    progress: Progress,
    fresh: bool = False,
) -> ExportMeasurement:
    """The export of (model, variant) by `exporter`: from the cache unless `fresh`, with the
    measurements of the run that produced it (marked `cached`)."""
    entry = export_entry(work_dir, exporter, model, variant, checkpoint_key)
    if not fresh:
        cached = load_measurement(entry)
        if cached is not None:
            progress(f"{model} {variant} [{exporter.name}]: export cached ({entry.name})")
            return cached
    staging = _staging(entry)
    try:
        measurement = normalize_measurement(
            exporter.export(checkpoint_dir, variant, staging, progress), exporter.name, variant
        )
        pte = Path(measurement.pte)
        if pte.parent.resolve() != staging.resolve():
            raise BenchmarkError(f"exporter {exporter.name} wrote its .pte outside {staging}: {pte}")
        stored = dataclasses.replace(measurement, pte=pte.name, cached=False)
        (staging / MEASUREMENT_FILE).write_text(json.dumps(dataclasses.asdict(stored), indent=2) + "\n")
        _publish(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dataclasses.replace(measurement, pte=str(entry / pte.name), cached=False)
