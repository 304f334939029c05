"""Style never drifts: ruff check and ruff format --check over every Python file we own."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _python_files() -> list[str]:
    # Runfiles hold exactly the files the BUILD declares as this test's data.
    base = Path.cwd()
    files = sorted(str(p.relative_to(base)) for p in base.rglob("*.py") if "external" not in p.parts)
    assert len(files) > 10, f"lint sees too few files: {files}"
    return files


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "--config", "pyproject.toml", *_python_files()],
        capture_output=True,
        text=True,
        env={**os.environ, "RUFF_NO_CACHE": "1"},
    )


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command):
    result = _ruff(*command)
    assert result.returncode == 0, result.stdout + result.stderr
