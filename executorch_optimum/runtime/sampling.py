"""Next-token choice from one logits vector: greedy, or temperature with nucleus (top-p)."""

from __future__ import annotations

import torch


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> int:
    """Greedy when `temperature` is 0; otherwise samples from softmax(logits / temperature)
    restricted to the smallest set of tokens whose probability reaches `top_p`."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    logits = logits.reshape(-1).float()
    if temperature == 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        # Keep a token while the mass before it is short of top_p (the top token always stays).
        sorted_probs = torch.where(before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator).item())
