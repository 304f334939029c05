"""A fused q/k/v linear computes what the three linears computed, and only the text decoder's
attention projections are fused."""

import copy

import pytest
import torch

from executorch_optimum.modules import fuse_attention_inputs
from executorch_optimum.xnnpack import QuantizationConfig, apply_quantization_
from tests.support.tiny_models import TINY_CONFIGS, tiny_model


def _attention_layers(model: torch.nn.Module) -> int:
    """By name, independently of the code's observation: modules with q/k/v linears."""
    return sum(
        all(
            isinstance(getattr(module, name, None), torch.nn.Linear)
            for name in ("q_proj", "k_proj", "v_proj")
        )
        for module in model.modules()
    )


def _plain_linear_names(model: torch.nn.Module) -> set[str]:
    return {name.rpartition(".")[2] for name, m in model.named_modules() if type(m) is torch.nn.Linear}


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_fused_model_computes_the_same_logits(arch):
    model = tiny_model(arch)
    reference = copy.deepcopy(model)
    expected = _attention_layers(model)
    assert fuse_attention_inputs(model) == expected
    assert expected == (0 if arch == "phi3" else model.config.num_hidden_layers)  # phi3: qkv_proj already
    kept = _plain_linear_names(model)
    assert not kept & {"q_proj", "k_proj", "v_proj"}
    # Everything else stays as it was, gate/up included (their split would cut the MLP).
    assert {"o_proj", "down_proj"} <= kept and ({"gate_proj", "up_proj"} <= kept or arch == "phi3")
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
    assert fuse_attention_inputs(fused) == 2
    config = QuantizationConfig(qlinear="8da4w", qlinear_group_size=32)
    apply_quantization_(model, config)
    apply_quantization_(fused, config)
    prompt = torch.randint(3, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(fused(prompt).logits, model(prompt).logits, rtol=1e-5, atol=1e-5)


def test_quantized_linears_are_left_alone():
    model = tiny_model("llama")
    apply_quantization_(model, QuantizationConfig(qlinear="8da4w", qlinear_group_size=32))
    assert fuse_attention_inputs(model) == 0


class _Attention(torch.nn.Module):
    def __init__(self, shared_input: bool, k_width: int = 8) -> None:
        super().__init__()
        self.shared_input = shared_input
        self.q_proj = torch.nn.Linear(8, 8)
        self.k_proj = torch.nn.Linear(k_width, 4, bias=False)
        self.v_proj = torch.nn.Linear(k_width, 4)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        kv_input = x if self.shared_input else other  # cross-attention: k/v read another tensor
        return self.q_proj(x).sum(-1) + self.k_proj(kv_input).sum(-1) + self.v_proj(kv_input).sum(-1)


class _Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = _Attention(shared_input=True)
        self.cross = _Attention(shared_input=False)
        self.wide = _Attention(shared_input=False, k_width=16)  # k/v of another width: not fusable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(x, x) + self.cross(x, x * 2 - 1) + self.wide(x, torch.cat([x, x], dim=-1))


class _Toy(torch.nn.Module):
    """A decoder (get_decoder) beside an encoder whose attention must stay as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = _Decoder()
        self.encoder = _Attention(shared_input=True)

    def get_decoder(self) -> torch.nn.Module:
        return self.decoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.one_hot(input_ids, 8).float()
        return self.decoder(x) + self.encoder(x, x)


def test_fuses_the_decoders_attention_and_stays_exact_for_other_inputs():
    torch.manual_seed(0)
    toy = _Toy()
    reference = copy.deepcopy(toy)
    assert fuse_attention_inputs(toy) == 2
    assert type(toy.decoder.shared.q_proj) is not torch.nn.Linear
    assert type(toy.decoder.cross.q_proj) is not torch.nn.Linear  # fused by structure...
    for module in (toy.decoder.wide, toy.encoder):
        assert all(type(getattr(module, n)) is torch.nn.Linear for n in ("q_proj", "k_proj", "v_proj"))
    ids = torch.tensor([[1, 5, 7]])
    with torch.no_grad():  # ...and still exact: k/v of another input recompute the group
        torch.testing.assert_close(toy(ids), reference(ids), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(toy(ids[:, :2]), reference(ids[:, :2]), rtol=1e-6, atol=1e-6)
