"""The zoo's outputs are reproducible: a second, separate run gives the same bytes.

Bazel built //models:ci_zoo (a data dependency) in its sandbox; here the same tools run
again in another process, from another working directory, with another PYTHONHASHSEED,
on the same inputs. A cache is only useful if the bytes match, and a report that names an
absolute path would differ on every machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNFILES = Path.cwd()
MODELS = RUNFILES / "models"
CI_ZOO = ("gemma3_tiny_fp32", "smollm2_tiny_fp32")


def _run_tool(tool: str, args: list[str], cwd: Path) -> None:
    env = dict(os.environ, PYTHONHASHSEED="123", OMP_NUM_THREADS="1")
    stub = RUNFILES / "tools" / "zoo" / tool
    done = subprocess.run(
        [sys.executable, str(stub), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{tool} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _flags_from_report(options: dict) -> list[str]:
    """The export flags a zoo target used, read back from its report."""
    flags = ["--task", options["task"], "--max_seq_len", str(options["max_seq_len"])]
    if options["max_context_len"] is not None:
        flags += ["--max_context_len", str(options["max_context_len"])]
    for kind in ("qlinear", "qembedding"):
        if options[kind]:
            flags += [f"--{kind}", options[kind], f"--{kind}_group_size", str(options[f"{kind}_group_size"])]
    return flags


@pytest.mark.parametrize("name", CI_ZOO)
def test_ci_zoo_outputs(name: str) -> None:
    pte = (MODELS / f"{name}.pte").read_bytes()
    report = json.loads((MODELS / f"{name}.report.json").read_text())
    assert report["size_bytes"] == len(pte) > 0
    assert report["pte"] == f"{name}.pte"
    assert report["metadata"]["get_max_seq_len"] == 32
    assert report["metadata"]["get_max_context_len"] == 256
    assert report["options"]["model_dir"].startswith("//models:")
    assert report["delegation"]["num_delegated"] > 0


def test_checkpoint_is_reproducible(tmp_path: Path) -> None:
    config = MODELS / "smollm2_tiny" / "config.json"
    _run_tool("make_checkpoint", ["--config", str(config), "--out_dir", "again", "--seed", "0"], cwd=tmp_path)
    built = MODELS / "smollm2_tiny_checkpoint"
    names = sorted(p.name for p in (tmp_path / "again").iterdir())
    assert names == ["config.json", "model.safetensors", "tokenizer.json"]
    for file_name in names:
        assert (tmp_path / "again" / file_name).read_bytes() == (built / file_name).read_bytes(), file_name


def test_checkpoint_seed_matters(tmp_path: Path) -> None:
    """The comparison above can fail: another seed gives other weights."""
    config = MODELS / "smollm2_tiny" / "config.json"
    _run_tool("make_checkpoint", ["--config", str(config), "--out_dir", "other", "--seed", "1"], cwd=tmp_path)
    built = MODELS / "smollm2_tiny_checkpoint" / "model.safetensors"
    assert (tmp_path / "other" / "model.safetensors").read_bytes() != built.read_bytes()


@pytest.mark.parametrize("name", ["smollm2_tiny_fp32", "smollm2_tiny_8da4w"])
def test_export_is_reproducible(tmp_path: Path, name: str) -> None:
    """Re-export a zoo model outside Bazel; .pte and report must match byte for byte."""
    built_report = (MODELS / f"{name}.report.json").read_bytes()
    options = json.loads(built_report)["options"]
    checkpoint = MODELS / "smollm2_tiny_checkpoint"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    args = ["--checkpoint", *(str(p) for p in sorted(checkpoint.iterdir()))]
    args += ["--checkpoint_label", options["model_dir"], "--output", f"out/{name}.pte"]
    args += ["--report", f"out/{name}.report.json", *_flags_from_report(options)]
    _run_tool("export_action", args, cwd=workdir)

    report = (workdir / "out" / f"{name}.report.json").read_bytes()
    assert report == built_report
    assert (workdir / "out" / f"{name}.pte").read_bytes() == (MODELS / f"{name}.pte").read_bytes()
    for path in (str(tmp_path), str(RUNFILES), "/home", "/root", "/tmp"):
        assert path.encode() not in report, f"report names {path}"
    assert sorted(p.name for p in (workdir / "out").iterdir()) == [f"{name}.pte", f"{name}.report.json"]
