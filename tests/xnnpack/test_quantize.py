"""Quantization: up-front validation, and quantized programs that match the eager model."""

import copy

import executorch.kernels.quantized  # noqa: F401  (quantized embedding kernels for the runtime)
import pytest
import torch
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import (
    QuantizationConfig,
    WeightOnlyLinearError,
    export_to_executorch_with_xnnpack,
    quantize_model_,
)


class TinyLm(torch.nn.Module):
    """Llama-shaped enough: embedding, a gated MLP, an LM head."""

    def __init__(self, vocab: int = 48, hidden: int = 64, inner: int = 128) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.gate = torch.nn.Linear(hidden, inner, bias=False)
        self.up = torch.nn.Linear(hidden, inner, bias=False)
        self.down = torch.nn.Linear(inner, hidden, bias=False)
        self.head = torch.nn.Linear(hidden, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = x + self.down(torch.nn.functional.silu(self.gate(x)) * self.up(x))
        return self.head(x)


class Wrapper(torch.nn.Module):
    """A minimal exportable module around an eager model, as the task wrappers provide."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        return {"forward": torch.export.export(self.model, (_tokens(),))}

    def metadata(self) -> dict:
        return {"get_max_seq_len": 6}


def _tokens() -> torch.Tensor:
    return torch.tensor([[1, 5, 9, 47, 0, 23]])


def _run(buffer: bytes) -> torch.Tensor:
    (out,) = Runtime.get().load_program(buffer).load_method("forward").execute([_tokens()])
    return out


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"qlinear": "int4"}, "unknown linear quantization scheme 'int4'"),
        ({"qembedding": "8da4w"}, "unknown embedding quantization scheme '8da4w'"),
        (
            {"qlinear": "8da4w", "qlinear_group_size": -32},
            "qlinear_group_size must be a non-negative integer",
        ),
        ({"qlinear": "8da4w", "qlinear_group_size": 16}, "multiple of 32"),
        ({"qlinear": "8da8w", "qlinear_group_size": 32}, "per-channel"),
        ({"qembedding": "4w", "qembedding_group_size": 7}, "qembedding_group_size must be even"),
        ({"qlinear": "8w", "qlinear_group_size": True}, "non-negative integer"),
    ],
)
def test_bad_settings_raise_one_clear_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        QuantizationConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_group_size_not_dividing_a_layer_fails_before_any_layer_is_touched():
    model = TinyLm(hidden=64, inner=96).eval()  # down has in_features 96, not a multiple of 64
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(
        ValueError, match=r"qlinear_group_size 64 does not divide in_features 96 of layer 'down'"
    ):
        quantize_model_(model, qlinear="8da4w", qlinear_group_size=64, qembedding="8w")
    after = model.state_dict()
    assert all(type(after[k]) is torch.Tensor and torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("qlinear, group_size", [("8da4w", 32), ("8da4w", 0), ("8da8w", 0)])
def test_dynamic_quantized_linears_are_delegated_and_match_eager(qlinear, group_size):
    model = TinyLm().eval()
    with torch.no_grad():
        fp32 = model(_tokens())
    lowered = export_to_executorch_with_xnnpack(
        Wrapper(model), quantize=QuantizationConfig(qlinear=qlinear, qlinear_group_size=group_size)
    )
    with torch.no_grad():
        want = model(_tokens())  # the eager model, now quantized the same way
    got = _run(lowered.buffer)
    # Quantization changed the numbers (so the comparison below is against the quantized model)...
    assert (want - fp32).abs().max() > 1e-4
    # ...and the program computes what the quantized eager model computes.
    torch.testing.assert_close(got, want, rtol=0, atol=2e-2 * want.abs().max().item())
    linears = sum(isinstance(m, torch.nn.Linear) for m in TinyLm().modules())
    assert lowered.report.delegated_ops()["aten.linear.default"] == linears
    assert "aten.linear.default" not in lowered.report.portable_ops()


@pytest.mark.parametrize("qembedding, group_size", [("8w", 0), ("8w", 32), ("4w", 32), ("4w", 0)])
def test_quantized_embedding_matches_eager(qembedding, group_size):
    model = TinyLm().eval()
    table = model.embed.weight.detach().clone()
    quantize_model_(model, qembedding=qembedding, qembedding_group_size=group_size)
    # The table really is quantized: close to the original, but not equal.
    dequantized = model.embed(torch.arange(48)).detach()
    assert not torch.equal(dequantized, table)
    torch.testing.assert_close(dequantized, table, rtol=0, atol=0.25 * table.abs().max().item())
    exported = torch.export.export(model, (_tokens(),))
    lowered = export_to_executorch_with_xnnpack({"forward": exported})
    with torch.no_grad():
        want = model(_tokens())
    torch.testing.assert_close(_run(lowered.buffer), want, rtol=1e-4, atol=1e-4)
    # The table stays quantized in the program: ExecuTorch's quantized embedding kernel reads it.
    kernel = "embedding_4bit" if qembedding == "4w" else "embedding_byte"
    targets = [
        str(n.target) for n in lowered.program.exported_program().graph.nodes if n.op == "call_function"
    ]
    assert any(f"quantized_decomposed.{kernel}" in t for t in targets), targets


@pytest.mark.parametrize("qlinear, group_size", [("4w", 32), ("8w", 0)])
def test_weight_only_linears_quantize_eagerly_but_are_refused_by_xnnpack(qlinear, group_size):
    model = TinyLm().eval()
    weight = model.gate.weight.detach().clone()
    quantize_model_(model, qlinear=qlinear, qlinear_group_size=group_size)
    probe = torch.eye(64)
    approx = model.gate(probe).detach().T  # columns of W, through the quantized layer
    assert not torch.equal(approx, weight)
    torch.testing.assert_close(approx, weight, rtol=0, atol=0.2 * weight.abs().max().item())

    exported = torch.export.export(model, (_tokens(),))
    with pytest.raises(WeightOnlyLinearError, match="use qlinear 8da4w or 8da8w"):
        export_to_executorch_with_xnnpack({"forward": exported})
    with pytest.raises(WeightOnlyLinearError):
        export_to_executorch_with_xnnpack(
            Wrapper(TinyLm().eval()),
            quantize=QuantizationConfig(qlinear=qlinear, qlinear_group_size=group_size),
        )
