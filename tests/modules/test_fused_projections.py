"""Fused sibling projections compute what the separate linears computed, and only siblings
that really read one tensor are fused."""

import copy

import pytest
import torch

from executorch_optimum.modules import fuse_shared_input_projections
from executorch_optimum.xnnpack import QuantizationConfig, apply_quantization_
from tests.support.tiny_models import TINY_CONFIGS, tiny_model

# By name, independently of the code's observation: the siblings Hugging Face feeds one tensor.
SHARED_INPUT_SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def _expected_groups(model: torch.nn.Module) -> int:
    return sum(
        all(isinstance(getattr(module, name, None), torch.nn.Linear) for name in names)
        for module in model.modules()
        for names in SHARED_INPUT_SIBLINGS
    )


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_fused_model_computes_the_same_logits(arch):
    model = tiny_model(arch)
    reference = copy.deepcopy(model)
    expected = _expected_groups(model)
    assert fuse_shared_input_projections(model) == expected
    # Projections that read other tensors (with the same width, e.g. o_proj) stay separate.
    kept = {name.rpartition(".")[2] for name, m in model.named_modules() if type(m) is torch.nn.Linear}
    assert {"o_proj", "down_proj"} <= kept or arch == "phi3"
    assert not kept & {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}
    prompt = torch.randint(3, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        want = reference(prompt).logits
        got = model(prompt).logits
        again = model(prompt[:, :4]).logits  # a second forward starts afresh
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, reference(prompt[:, :4]).logits, rtol=1e-5, atol=1e-5)


def test_fused_then_quantized_matches_quantized_separate_linears():
    """Per-output-row groups and per-token activation scales: fusion changes no quantization."""
    model = tiny_model("qwen2")  # q/k/v carry biases
    fused = copy.deepcopy(model)
    assert fuse_shared_input_projections(fused) == 4
    config = QuantizationConfig(qlinear="8da4w", qlinear_group_size=32)
    apply_quantization_(model, config)
    apply_quantization_(fused, config)
    prompt = torch.randint(3, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(fused(prompt).logits, model(prompt).logits, rtol=1e-5, atol=1e-5)


def test_quantized_linears_are_left_alone():
    model = tiny_model("llama")
    apply_quantization_(model, QuantizationConfig(qlinear="8da4w", qlinear_group_size=32))
    assert fuse_shared_input_projections(model) == 0


class _Toy(torch.nn.Module):
    """`a`/`b` read one tensor (b first, b without bias); `c` shares a's width but not its
    input; `d`/`e` read one tensor twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.config = None
        self.a = torch.nn.Linear(8, 5)
        self.b = torch.nn.Linear(8, 3, bias=False)
        self.c = torch.nn.Linear(8, 8)
        self.d = torch.nn.Linear(8, 8)
        self.e = torch.nn.Linear(8, 8)

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        x = torch.nn.functional.one_hot(input_ids, 8).float()
        y = self.c(x)
        h = torch.cat([self.b(y), self.a(y)], dim=-1)
        for _ in range(2):
            h = self.d(h) * self.e(h)
        return h


def test_only_siblings_reading_one_tensor_once_are_fused():
    torch.manual_seed(0)
    toy = _Toy()
    reference = copy.deepcopy(toy)
    assert fuse_shared_input_projections(toy) == 1
    assert type(toy.a) is not torch.nn.Linear and type(toy.b) is not torch.nn.Linear
    assert all(type(m) is torch.nn.Linear for m in (toy.c, toy.d, toy.e))
    ids = torch.tensor([[1, 5, 7]])
    with torch.no_grad():
        torch.testing.assert_close(toy(ids), reference(ids), rtol=1e-6, atol=1e-6)
