"""rotate_half as a matrix product and rotary in sequence-major layout: exact against
transformers' own functions, and each swap is confined to its block."""

import sys
import types

import pytest
import torch
from transformers.models.llama import modeling_llama

from executorch_optimum.modules.rotary import (
    linear_rotate_half,
    rotary_for_export,
    rotate_half_matrix,
    sequence_major_rotary,
)
from tests.support.tiny_models import tiny_model


@pytest.mark.parametrize("dim", [2, 8, 64, 128, 256])
def test_matrix_product_equals_transformers_rotate_half(dim):
    torch.manual_seed(dim)
    x = torch.randn(3, 5, 7, dim)
    got = x @ rotate_half_matrix(dim).T
    # +-1 and 0 entries: every output is exactly one input, negated or not.
    assert torch.equal(got, modeling_llama.rotate_half(x))


def test_odd_dim_is_refused():
    with pytest.raises(ValueError, match="even"):
        rotate_half_matrix(7)


def test_swap_is_scoped_and_keeps_the_model_output():
    model = tiny_model("llama")
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    original = modeling_llama.rotate_half
    with torch.no_grad():
        want = model(ids).logits
        with linear_rotate_half(model):
            assert modeling_llama.rotate_half is not original
            buffers = {name for name, _ in model.named_buffers()}
            assert any(name.startswith("eo_rotate_half_") for name in buffers)
            got = model(ids).logits
    assert modeling_llama.rotate_half is original
    assert not any(name.startswith("eo_rotate_half_") for name, _ in model.named_buffers())
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_swap_is_undone_when_the_block_raises():
    model = tiny_model("llama")
    original = modeling_llama.rotate_half
    with pytest.raises(RuntimeError, match="boom"), linear_rotate_half(model):
        raise RuntimeError("boom")
    assert modeling_llama.rotate_half is original
    assert not any(name.startswith("eo_rotate_half_") for name, _ in model.named_buffers())


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_sequence_major_rotary_gives_the_same_bits(arch):
    """Same products in another layout: the logits must not move by a single bit."""
    model = tiny_model(arch)
    module = sys.modules[type(model).__module__]
    original = module.apply_rotary_pos_emb
    ids = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        want = model(ids).logits
        with sequence_major_rotary(model):
            assert module.apply_rotary_pos_emb is not original
            got = model(ids).logits
    assert module.apply_rotary_pos_emb is original
    assert torch.equal(got, want)


def test_sequence_major_rotary_rotates_in_sequence_layout(monkeypatch):
    """The wrapped function sees [B, S, H, D] tensors and cos/sin unsqueezed on dim 2, and the
    caller still gets [B, H, S, D] back, equal to the original's result."""
    seen = []

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):  # noqa: ANN001, ANN202
        seen.append((tuple(q.shape), unsqueeze_dim))
        return modeling_llama.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim)

    modeling = types.ModuleType("fake_modeling")
    modeling.apply_rotary_pos_emb = apply_rotary_pos_emb
    monkeypatch.setitem(sys.modules, "fake_modeling", modeling)
    model = type("FakeModel", (torch.nn.Module,), {"__module__": "fake_modeling"})()
    torch.manual_seed(0)
    q, k = torch.randn(1, 6, 5, 8), torch.randn(1, 2, 5, 8)
    cos, sin = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    with sequence_major_rotary(model):
        q_out, k_out = modeling.apply_rotary_pos_emb(q, k, cos, sin)
    assert modeling.apply_rotary_pos_emb is apply_rotary_pos_emb
    assert seen == [((1, 5, 6, 8), 2)]
    want_q, want_k = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(q_out, want_q) and torch.equal(k_out, want_k)


def test_rotary_for_export_undoes_both_swaps_when_the_block_raises():
    model = tiny_model("llama")
    rotate, apply = modeling_llama.rotate_half, modeling_llama.apply_rotary_pos_emb
    with pytest.raises(RuntimeError, match="boom"), rotary_for_export(model):
        assert modeling_llama.apply_rotary_pos_emb is not apply
        raise RuntimeError("boom")
    assert modeling_llama.rotate_half is rotate
    assert modeling_llama.apply_rotary_pos_emb is apply


def test_a_deferred_query_rotary_nobody_takes_is_an_error():
    """With defer_rotary the query and key leave unrotated; an attention that does not take the
    tables (here transformers' own) would compute wrong numbers, so the next layer's hand-over
    fails."""
    model = tiny_model("llama")
    with pytest.raises(RuntimeError, match="never used"), torch.no_grad(), sequence_major_rotary(model, True):
        model(torch.tensor([[3, 1, 4]]))
    with torch.no_grad(), sequence_major_rotary(model, defer_rotary=False):
        model(torch.tensor([[3, 1, 4]]))  # without deferral nothing is handed over


def test_a_deferred_key_rotary_nobody_takes_is_an_error():
    """The attention took the query's tables but no cache update took the key's: the keys would
    be cached unrotated, so leaving the block fails and names the key."""
    from executorch_optimum.caches.deferred_rotary import QUERY_ROTARY

    model = tiny_model("llama")
    q = k = torch.randn(1, 2, 3, 8)  # [B, H, S, D]
    cos, sin = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    with pytest.raises(RuntimeError, match="key's rotary tables were never used"):
        with sequence_major_rotary(model, defer_rotary=True):
            q_out, k_out = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
            assert q_out is q and k_out is k  # both handed on unrotated
            assert QUERY_ROTARY.take() is not None
