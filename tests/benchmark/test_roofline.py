"""Weight bytes per decoded token, checked against independent counts of real tensors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

from executorch_optimum.benchmark.roofline import (
    CONVENTION,
    measure_copy_bandwidth,
    roofline_tokens_per_s,
    weight_bytes_per_token,
)
from executorch_optimum.benchmark.variants import VARIANTS, Variant
from executorch_optimum.benchmark.zoo import config_path


def _model(name: str, **overrides: object) -> transformers.PreTrainedModel:
    config = transformers.AutoConfig.from_pretrained(config_path(name).parent, local_files_only=True)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _fp32_count_from_state_dict(model: torch.nn.Module) -> int:
    """Every distinct tensor of the state dict at 4 bytes, minus a table only gathered."""
    state = model.state_dict()
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    seen, total = set(), 0
    for tensor in state.values():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        if tensor.data_ptr() == embed.data_ptr() and not tied:
            continue
        total += 4 * tensor.numel()
    return total


@pytest.mark.parametrize("name", ["smollm2_tiny", "gemma3_tiny"])
def test_fp32_is_every_distinct_parameter(name: str) -> None:
    model = _model(name)
    counts = weight_bytes_per_token(model, VARIANTS["fp32"])
    assert counts["total"] == _fp32_count_from_state_dict(model)
    # Tied: the table is read once, by lm_head.
    assert counts["lm_head"] == 4 * model.get_input_embeddings().weight.numel()


def test_fp32_untied_embedding_table_is_not_read() -> None:
    model = _model("smollm2_tiny", tie_word_embeddings=False)
    model = transformers.AutoModelForCausalLM.from_config(model.config).eval()
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    counts = weight_bytes_per_token(model, VARIANTS["fp32"])
    everything = sum(4 * p.numel() for p in model.parameters())
    assert counts["total"] == everything - 4 * model.model.embed_tokens.weight.numel()
    assert counts["total"] == _fp32_count_from_state_dict(model)


def test_8da4w_matches_the_quantized_tensors() -> None:
    """Count packed int4 + bf16 group scales from the tensors our quantizer really makes."""
    from executorch_optimum.xnnpack import QuantizationConfig, apply_quantization_

    variant = VARIANTS["8da4w"]
    model = _model("smollm2_tiny")
    expected = weight_bytes_per_token(model, variant)
    apply_quantization_(
        model,
        QuantizationConfig(
            qlinear=variant.qlinear,
            qlinear_group_size=variant.qlinear_group_size,
            qembedding=variant.qembedding,
            qembedding_group_size=variant.qembedding_group_size,
        ),
    )
    linear = lm_head = other = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            weight = module.weight
            packed = weight.qdata.numel() // 2  # int4 values, two per byte
            scales = 2 * weight.scale.numel()  # bf16 in XNNPACK
            if name == "lm_head":
                lm_head += packed + scales
            else:
                linear += packed + scales
            assert module.bias is None
        elif isinstance(module, torch.nn.Embedding):
            continue  # gathered: one row per token
        else:
            other += sum(4 * p.numel() for p in module.parameters(recurse=False))
    assert expected == {
        "linear": linear,
        "lm_head": lm_head,
        "other": other,
        "total": linear + lm_head + other,
    }
    # 4-bit weights + a 2-byte scale per 32 weights: 4.5 bits per weight.
    fp32 = weight_bytes_per_token(_model("smollm2_tiny"), VARIANTS["fp32"])
    assert expected["linear"] * 8 == pytest.approx(fp32["linear"] / 4 * 4.5)


def test_per_channel_scales_are_fp32() -> None:
    model = _model("smollm2_tiny")
    per_channel = Variant("x", qlinear="8da8w", qlinear_group_size=0)
    counts = weight_bytes_per_token(model, per_channel)
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert counts["linear"] == sum(m.weight.numel() + 4 * m.out_features for m in linears)


def test_bandwidth_and_roofline_arithmetic() -> None:
    bandwidth = measure_copy_bandwidth(threads=1, buffer_mib=8, repeats=2)
    assert bandwidth.gb_per_s > 0
    assert "read + write" in bandwidth.convention == CONVENTION
    assert bandwidth.read_gb_per_s > 0
    assert roofline_tokens_per_s(bandwidth, 10**9) == pytest.approx(bandwidth.gb_per_s)
    assert roofline_tokens_per_s(bandwidth, 10**9, read=True) == pytest.approx(bandwidth.read_gb_per_s)
    better = bandwidth.best(dataclasses.replace(bandwidth, gb_per_s=1e6, read_gb_per_s=None))
    assert (better.gb_per_s, better.read_gb_per_s) == (1e6, bandwidth.read_gb_per_s)
