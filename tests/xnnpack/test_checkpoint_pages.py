"""Quantizing and lowering a memory-mapped checkpoint page it out as they go (it is never
resident whole), with the same quantized model as torchao's one pass and the same program."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import safe_open, save_file

import executorch_optimum.xnnpack.quantize as quantize_module
from executorch_optimum.modules import CausalLMExportableModule
from executorch_optimum.xnnpack import (
    QuantizationConfig,
    apply_quantization_,
    export_to_executorch_with_xnnpack,
)
from executorch_optimum.xnnpack.checkpoint_pages import file_backed_ranges, page_out
from tests.support.tiny_models import tiny_config

CONFIG = QuantizationConfig(qlinear="8da4w", qlinear_group_size=32, qembedding="8w")


def resident_bytes(path: Path) -> int:
    """Bytes of `path`'s mappings resident in this process (/proc/self/smaps Rss)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) == 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tied-embedding Llama (SmolLM2's shape, scaled down) with 8 MB of float weights."""
    config = tiny_config(
        "llama", vocab_size=4096, hidden_size=256, intermediate_size=512, num_attention_heads=8
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    out = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(out)
    return out


def load(checkpoint: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True).eval()


def test_quantizing_leaves_no_float_weight_resident(checkpoint: Path) -> None:
    model = load(checkpoint)
    (weights,) = checkpoint.glob("*.safetensors")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for parameter in model.parameters():  # as quantization would: every weight read once
        parameter.sum()
    before = resident_bytes(weights)
    assert before > 0.9 * weights.stat().st_size, "the checkpoint is not memory-mapped"
    apply_quantization_(model, CONFIG)
    assert resident_bytes(weights) == 0


def test_lowering_leaves_no_float_weight_resident(checkpoint: Path, tmp_path: Path) -> None:
    """fp32: XNNPACK packs every weight (all pages read); each blob written to disk lets them go.
    The tied embedding (4 MB) is the blob large enough to spill; the program stays the same."""
    (weights,) = checkpoint.glob("*.safetensors")
    resident, programs = {}, {}
    for page_out_checkpoint in (True, False):  # with, first: the other's mapping stays resident
        model = load(checkpoint)
        for parameter in model.parameters():
            parameter.sum()
        lowered = export_to_executorch_with_xnnpack(
            CausalLMExportableModule(model, max_seq_len=8, max_context_len=32),
            spill_dir=tmp_path,
            page_out_checkpoint=page_out_checkpoint,
        )
        resident[page_out_checkpoint] = resident_bytes(weights)
        programs[page_out_checkpoint] = lowered.program.buffer
    # Read again after the last blob: the norms and the embedding, for the program's constants.
    assert resident[True] < 0.6 * weights.stat().st_size
    assert resident[False] > 0.9 * weights.stat().st_size
    assert programs[True] == programs[False]


@pytest.mark.parametrize("chunk_bytes", [None, 300_000])
def test_same_model_as_one_torchao_pass(checkpoint: Path, chunk_bytes, monkeypatch) -> None:
    """Also when every weight of 300 kB or more is quantized in slices of rows (the 4 MB tied
    table in 15, the last one short; the 512 kB MLP weights in 2)."""
    from torchao.quantization import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        PerAxis,
        PerGroup,
        quantize_,
    )

    if chunk_bytes is not None:
        monkeypatch.setattr(quantize_module, "CHUNK_BYTES", chunk_bytes)
    ours = load(checkpoint)
    apply_quantization_(ours, CONFIG)
    reference = load(checkpoint)
    quantize_(
        reference,
        IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
        lambda module, fqn: isinstance(module, torch.nn.Embedding),
    )
    quantize_(
        reference,
        Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32)),
    )
    tokens = torch.randint(0, 4096, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours(tokens).logits, reference(tokens).logits)
    for (name, got), (_, want) in zip(ours.state_dict().items(), reference.state_dict().items(), strict=True):
        assert type(got) is type(want), name
        for attribute in ("qdata", "scale", "zero_point"):
            if hasattr(want, attribute):
                assert torch.equal(getattr(got, attribute), getattr(want, attribute)), f"{name}.{attribute}"
        for attribute in getattr(want, "tensor_attribute_names", ()):
            assert getattr(got, attribute) == getattr(want, attribute), f"{name}.{attribute}"


def test_page_out_keeps_the_bytes_and_skips_anonymous_memory(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.randn(1024, 1024)}, path)
    # Written back first, as a checkpoint on disk is: the kernel reclaims clean file pages at
    # once, while dirty ones wait for writeback (seen to fail here under another job's I/O).
    with open(path, "rb+") as written:
        os.fsync(written.fileno())
    with safe_open(path, "pt") as f:
        mapped = f.get_tensor("w")
    copy = mapped.clone()
    ranges = file_backed_ranges(suffix=str(path))
    assert len(ranges) == 1 and resident_bytes(path) >= 4 << 20
    assert page_out(ranges) >= 4 << 20
    assert resident_bytes(path) == 0
    assert torch.equal(mapped, copy)  # read back from the file
    assert resident_bytes(path) >= 4 << 20
