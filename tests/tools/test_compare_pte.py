"""//tools:compare_pte: two programs measured in turns, a table with paired ratios, clear errors."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.support.tiny_programs import CachedTinyLm

TOOL = Path(__file__).resolve().parents[2] / "tools" / "compare_pte.py"


def _tool():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("compare_pte", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two different tiny programs (other weights, other vocabularies: the prompt must fit both)."""
    out = []
    for seed, vocab in ((0, 12), (1, 40)):
        torch.manual_seed(seed)
        pte = tmp_path_factory.mktemp("pte") / f"tiny{seed}.pte"
        pte.write_bytes(
            export_to_executorch_with_xnnpack(CachedTinyLm(vocab=vocab, context=32).eval()).buffer
        )
        out.append(pte)
    return out


def test_table_has_each_program_and_its_ratio_to_the_first(programs, capsys) -> None:  # noqa: ANN001
    argv = [a for p in programs for a in ("--pte", str(p))]
    assert _tool().main([*argv, "--prompt_len", "9", "--new_tokens", "5", "--repeats", "3", "--quiet"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and ".pte" in line]
    assert [row.split("|")[1].strip() for row in rows] == [str(p) for p in programs]
    first = rows[0].split("|")
    assert first[4].strip() == first[5].strip() == "1.000"  # the baseline against itself
    number = r"\d+\.\d+( \[\d+\.\d+–\d+\.\d+\])?"
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:6]]
        assert all(re.fullmatch(number, c) for c in cells), row


def test_bad_input_is_refused_with_a_message(programs, tmp_path, capsys) -> None:  # noqa: ANN001
    tool = _tool()
    assert tool.main(["--pte", str(programs[0]), "--pte", str(tmp_path / "none.pte")]) == 2
    assert "no .pte at" in capsys.readouterr().err
    assert tool.main(["--pte", str(programs[0]), "--repeats", "1", "--quiet"]) == 2
    assert "at least two programs" in capsys.readouterr().err
    assert tool.main(["--pte", str(programs[0]), "--pte", str(programs[1]), "--prompt_len", "30"]) == 2
    assert "exceeds its context of 32" in capsys.readouterr().err
    assert tool.main(["--pte", str(programs[0]), "--pte", str(programs[1]), "--prefill_calls", "0"]) == 2
    assert "prefill_calls must be >= 1" in capsys.readouterr().err
