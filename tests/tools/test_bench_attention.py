"""`//tools:bench_attention`: both ops timed on every model shape, and a wrong result stops it."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_attention as bench  # noqa: E402


def test_prints_a_row_per_shape_and_call(capsys):
    assert bench.main(["--repeats", "2", "--context", "1024"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line[2:].split(" |")[0] in bench.SHAPES]
    assert len(rows) == len(bench.SHAPES) * len(bench.CALLS)
    assert all(row.rstrip().endswith("x |") for row in rows)


def test_skips_calls_beyond_the_cache(capsys):
    assert bench.main(["--repeats", "1", "--context", "200"]) == 0
    out = capsys.readouterr().out
    assert "1 @ 1000" not in out and "1 @ 192" in out


def test_an_op_that_disagrees_with_float64_fails(monkeypatch, capsys):
    def all_zeros(q, k, v, start, scale):
        return torch.zeros(q.shape, dtype=torch.float64)

    monkeypatch.setattr(bench, "_reference", all_zeros)
    assert bench.main(["--repeats", "1", "--context", "256"]) == 1
    assert "differs from float64 SDPA" in capsys.readouterr().out


def test_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--threads", "0"])
    assert exit_info.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err
