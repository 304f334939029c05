"""Argument errors: one line on stderr, exit status 2, no work started, no output written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from executorch_optimum.benchmark.cli import build_parser, main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


@pytest.fixture
def work(tmp_path: Path) -> list[str]:
    return ["--work_dir", str(tmp_path / "work")]


def test_unknown_model_lists_the_zoo(capsys: pytest.CaptureFixture[str], work: list[str]) -> None:
    code, err = _run(capsys, "--models", "smollm2_tiny,llama9", *work)
    assert code == 2
    assert err.startswith("error: unknown model 'llama9' (zoo models: ")
    assert "smollm2_135m" in err and "gemma3_tiny" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_plot_model(capsys: pytest.CaptureFixture[str], work: list[str]) -> None:
    code, err = _run(capsys, "--models", "smollm2_tiny", "--plot_models", "nope", *work)
    assert code == 2 and "unknown model 'nope'" in err


def test_bad_variant(capsys: pytest.CaptureFixture[str], work: list[str]) -> None:
    code, err = _run(capsys, "--models", "smollm2_tiny", "--variants", "fp32,int3", *work)
    assert code == 2
    assert err.strip() == "error: unknown variant 'int3' (variants: fp32, 8da4w)"


def test_out_dir_is_a_file(capsys: pytest.CaptureFixture[str], work: list[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _run(capsys, "--models", "smollm2_tiny", "--out_dir", str(blocker / "results"), *work)
    assert code == 2 and err.startswith("error: output directory is not writable")
    assert blocker.read_text() == "x"


def test_unknown_comparison(capsys: pytest.CaptureFixture[str], work: list[str]) -> None:
    code, err = _run(capsys, "--models", "smollm2_tiny", "--compare", "tflite", *work)
    assert code == 2 and err.startswith("error: unknown exporter 'tflite' for --compare")


def test_context_too_short(capsys: pytest.CaptureFixture[str], work: list[str]) -> None:
    code, err = _run(capsys, "--models", "smollm2_tiny", "--max_context_len", "200", *work)
    assert code == 2 and "exceeds --max_context_len (200)" in err


def test_half_kv_cache_needs_native_kernels(capsys: pytest.CaptureFixture[str], work: list[str]) -> None:
    code, err = _run(capsys, "--models", "smollm2_tiny", "--kv_cache_dtype", "float16", *work)
    assert code == 2 and err.strip() == "error: --kv_cache_dtype float16 needs --native_kernels"
    assert not Path(work[1]).exists()


def test_kv_cache_dtype_names_are_the_exporters() -> None:
    """The benchmark offers exactly the cache types export_model maps (kept torch-free here)."""
    from executorch_optimum.benchmark.exporters import KV_CACHE_DTYPES
    from executorch_optimum.export import KV_CACHE_DTYPES as EXPORT_KV_CACHE_DTYPES

    assert set(KV_CACHE_DTYPES) == set(EXPORT_KV_CACHE_DTYPES)


@pytest.mark.parametrize("flag", ["--repeats", "--threads", "--prompt_len", "--prefill_calls"])
def test_non_positive_numbers(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([flag, "0"])
    assert exit_info.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_help_explains_every_flag() -> None:
    parser = build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
    text = parser.format_help()
    for flag in (
        "--models",
        "--variants",
        "--plot_models",
        "--work_dir",
        "--out_dir",
        "--fresh",
        "--compare",
    ):
        assert flag in text


def test_fresh_names_the_exporters_to_re_export() -> None:
    from types import SimpleNamespace

    from executorch_optimum.benchmark.cli import fresh_exporters

    exporters = [SimpleNamespace(name="ours"), SimpleNamespace(name="optimum-executorch 1.1.0")]
    parse = build_parser().parse_args
    assert fresh_exporters(parse([]).fresh, exporters) == frozenset()
    assert fresh_exporters(parse(["--fresh"]).fresh, exporters) == {"ours", "optimum-executorch 1.1.0"}
    assert fresh_exporters(parse(["--fresh", "ours"]).fresh, exporters) == {"ours"}
    assert fresh_exporters(parse(["--fresh", "compared"]).fresh, exporters) == {"optimum-executorch 1.1.0"}


def test_fresh_rejects_an_unknown_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--fresh", "theirs"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'theirs'" in capsys.readouterr().err


_RECORD_OPENMP_AT_TORCH_IMPORT = """
import os, sys

class StopAtTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("OMP_NUM_THREADS at torch import:", os.environ.get("OMP_NUM_THREADS"), flush=True)
            os._exit(0)
        return None

sys.meta_path.insert(0, StopAtTorch())
from executorch_optimum.benchmark.cli import main
main(sys.argv[1:])
print("torch was never imported", flush=True)
"""


def test_openmp_is_single_threaded_before_torch_loads(tmp_path: Path) -> None:
    """Set after torch loads, OMP_NUM_THREADS no longer sizes MKL's OpenMP pool, whose
    spinning workers then halve the measured prefill speed of every program."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    argv = ["--models", "smollm2_tiny", "--no_eager", "--work_dir", str(tmp_path / "work")]
    done = subprocess.run(
        [sys.executable, "-c", _RECORD_OPENMP_AT_TORCH_IMPORT, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "OMP_NUM_THREADS at torch import: 1" in done.stdout, done.stdout + done.stderr
