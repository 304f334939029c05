"""Spilled weight blobs: the same program bytes; the files are gone when the process ends.

Reference: the same lowering with the blobs kept in memory (`spill_weights=False`).
"""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys

import pytest
import torch

from executorch_optimum.modules import CausalLMExportableModule
from executorch_optimum.xnnpack import QuantizationConfig, export_to_executorch_with_xnnpack
from executorch_optimum.xnnpack.spill import spill_named_data
from tests.support.tiny_models import tiny_model


def _spilled(tmp_path):
    return sorted(tmp_path.glob(".eo_weights_*"))


@pytest.mark.parametrize("qlinear", [None, "8da4w"])
def test_every_blob_spilled_gives_the_same_program(tmp_path, qlinear):
    from executorch.exir._serialize._named_data_store import NamedDataStore

    model = tiny_model("llama")
    quantize = QuantizationConfig(qlinear=qlinear) if qlinear else None

    def lower():
        module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=4, max_context_len=16)
        return export_to_executorch_with_xnnpack(module, quantize=quantize, spill_weights=False)

    original = NamedDataStore.add_named_data
    with spill_named_data(tmp_path, min_bytes=1):
        spilled = lower()
    assert NamedDataStore.add_named_data is original
    assert _spilled(tmp_path), "no blob went to a file"
    in_memory = lower()
    streamed = io.BytesIO()
    spilled.program.write_to_file(streamed)
    assert streamed.getvalue() == spilled.buffer == in_memory.buffer


def test_blob_files_are_removed_when_the_process_exits(tmp_path):
    code = (
        "import sys, torch\n"
        "from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack\n"
        "model = torch.nn.Linear(512, 1024)\n"
        "program = torch.export.export(model, (torch.randn(1, 512),))\n"
        "lowered = export_to_executorch_with_xnnpack(program, spill_dir=sys.argv[1])\n"
        "print(len(list(__import__('pathlib').Path(sys.argv[1]).glob('.eo_weights_*'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "1"  # alive while the program was
    assert _spilled(tmp_path) == []


def test_large_weights_spill_by_default_and_small_ones_stay(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 8))
    example = (torch.randn(2, 512),)
    spill_dir = tmp_path / "not" / "yet"  # an output directory the export creates
    spilled = export_to_executorch_with_xnnpack(torch.export.export(model, example), spill_dir=spill_dir)
    files = _spilled(spill_dir)
    assert [f.stat().st_size for f in files] == [512 * 1024 * 4]  # the 2 MiB weight, not the rest
    in_memory = export_to_executorch_with_xnnpack(torch.export.export(model, example), spill_weights=False)
    assert spilled.buffer == in_memory.buffer
