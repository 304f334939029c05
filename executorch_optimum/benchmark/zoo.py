"""Zoo model names: the folders of models/ that hold a config.json."""

from __future__ import annotations

import json
from pathlib import Path

from executorch_optimum.benchmark.errors import BenchmarkError

# models/ sits beside the executorch_optimum package, in the source tree and in Bazel runfiles.
ZOO_DIR = Path(__file__).resolve().parents[2] / "models"


def _zoo_dir() -> Path:
    here = Path(__file__).parents[2] / "models"  # runfiles: keep the symlinked tree
    return here if here.is_dir() else ZOO_DIR


def zoo_models() -> list[str]:
    """Every zoo model name, sorted."""
    root = _zoo_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/config.json"))


def config_path(name: str) -> Path:
    """models/<name>/config.json, or a BenchmarkError that lists the valid names."""
    path = _zoo_dir() / name / "config.json"
    if not name or "/" in name or not path.is_file():
        raise BenchmarkError(
            f"unknown model '{name}' (zoo models: {', '.join(zoo_models()) or 'none found'})"
        )
    return path


def load_config(name: str) -> dict:
    return json.loads(config_path(name).read_text())


def parse_model_list(text: str, flag: str = "--models") -> list[str]:
    """'a,b' -> ['a', 'b'] after checking each name; duplicates are dropped, order kept."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BenchmarkError(f"{flag} is empty (zoo models: {', '.join(zoo_models())})")
    for name in names:
        config_path(name)
    return list(dict.fromkeys(names))
