"""sample_next_token: greedy, temperature and top-p against direct probability computations."""

import pytest
import torch

from executorch_optimum.runtime import greedy_token, sample_next_token


def test_greedy_is_argmax_over_shapes():
    logits = torch.randn(1, 1, 50)
    assert sample_next_token(logits) == int(logits.argmax())


def test_greedy_takes_the_first_maximum_of_any_layout():
    torch.manual_seed(0)
    assert sample_next_token(torch.tensor([1.0, 3.0, 3.0, 0.0])) == 1  # a tie: the first one
    rows = torch.randn(49152, 3)
    column = rows[:, 1]  # a strided view, as logits rows of a bigger buffer can be
    assert sample_next_token(column) == int(torch.argmax(column.contiguous()))
    half = torch.randn(300).to(torch.bfloat16)
    assert sample_next_token(half) == int(torch.argmax(half.float()))


def test_greedy_token_matches_torch_argmax():
    """greedy_token takes numpy's argmax; torch's is the reference (ties, NaN, dtypes)."""
    torch.manual_seed(1)
    cases = [
        torch.randn(1, 1, 151936),
        torch.tensor([2.0, 5.0, 5.0, 1.0]),
        torch.tensor([0.0, float("nan"), 3.0]),
        torch.tensor([float("-inf"), float("-inf")]),
        torch.randn(64, 7)[:, 3],
        torch.randn(500, dtype=torch.float16),
        torch.randn(500).to(torch.bfloat16),
        torch.randn(2, 3, requires_grad=True),
    ]
    for logits in cases:
        assert greedy_token(logits) == int(torch.argmax(logits.detach().float())), logits


def test_top_p_keeps_only_the_nucleus():
    # Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two (0.5 < 0.75 <= 0.8).
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()
    generator = torch.Generator().manual_seed(0)
    draws = [sample_next_token(logits, 1.0, 0.75, generator) for _ in range(2000)]
    assert set(draws) == {1, 3}
    share = draws.count(1) / len(draws)
    assert abs(share - 0.5 / 0.8) < 0.04


def test_temperature_sampling_follows_the_softmax():
    logits = torch.tensor([0.0, 1.0, 2.0])
    temperature = 2.0
    want = torch.softmax(logits / temperature, -1)
    generator = torch.Generator().manual_seed(1)
    draws = torch.tensor([sample_next_token(logits, temperature, 1.0, generator) for _ in range(4000)])
    got = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(got, want, rtol=0, atol=0.03)


@pytest.mark.parametrize("kwargs", [{"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(4), **kwargs)
