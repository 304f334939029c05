"""rotate_half as a matrix product: exact against transformers' own rotate_half, and the
swap is confined to the `linear_rotate_half` block."""

import pytest
import torch
from transformers.models.llama import modeling_llama

from executorch_optimum.modules.rotary import linear_rotate_half, rotate_half_matrix
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
