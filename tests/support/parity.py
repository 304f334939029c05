"""Greedy runs of an eager Hugging Face model and of a program, step by step, to compare."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

# (input_ids [1, S], cache_position [S]) -> logits [1, S or 1, V]
Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Trace:
    """Last-position logits after the prompt and after each decoded token."""

    logits: list[torch.Tensor]
    tokens: list[int]


class RoundingCache(DynamicCache):
    """transformers' dynamic cache holding every key and value rounded to `dtype` (as a
    narrower KV cache does); attention reads them back in the model's dtype."""

    def __init__(self, dtype: torch.dtype, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.round_to = dtype

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = key_states.to(self.round_to).to(key_states.dtype)
        values = value_states.to(self.round_to).to(value_states.dtype)
        return super().update(keys, values, layer_idx, *args, **kwargs)


def reference_cache(model: PreTrainedModel, kv_dtype: torch.dtype | None = None) -> DynamicCache:
    """The eager reference's cache: transformers' own, or one rounding to `kv_dtype`."""
    if kv_dtype is None:
        return DynamicCache(config=model.config)
    return RoundingCache(kv_dtype, config=model.config)


def eager_trace(
    model: PreTrainedModel, prompt: torch.Tensor, steps: int, kv_dtype: torch.dtype | None = None
) -> Trace:
    """Greedy decode with the model's own dynamic cache and attention (the reference);
    `kv_dtype` rounds what the cache holds (RoundingCache)."""
    cache = reference_cache(model, kv_dtype)
    logits, tokens = [], []
    with torch.no_grad():
        row = model(input_ids=prompt, cache=cache, use_cache=True).logits[0, -1]
        for _ in range(steps):
            logits.append(row)
            token = int(row.argmax())
            tokens.append(token)
            row = model(input_ids=torch.tensor([[token]]), cache=cache, use_cache=True).logits[0, -1]
        logits.append(row)
    return Trace(logits, tokens)


def program_trace(step: Step, prompt: torch.Tensor, steps: int, chunk: int, forced: list[int]) -> Trace:
    """Prefill in chunks of at most `chunk`, then decode feeding `forced` tokens.

    Feeding the reference's tokens (teacher forcing) compares logits at identical inputs
    even if a near-tie once flips an argmax; the greedy tokens are compared separately.
    """
    logits, tokens = [], []
    length = prompt.shape[1]
    with torch.no_grad():
        for begin in range(0, length, chunk):
            ids = prompt[:, begin : begin + chunk]
            out = step(ids, torch.arange(begin, begin + ids.shape[1]))
        row = out[0, -1]
        for i in range(steps):
            logits.append(row)
            tokens.append(int(row.argmax()))
            row = step(torch.tensor([[forced[i]]]), torch.tensor([length + i]))[0, -1]
        logits.append(row)
    return Trace(logits, tokens)


def max_logit_diff(got: Trace, want: Trace) -> float:
    return max(float((g - w).abs().max()) for g, w in zip(got.logits, want.logits, strict=True))


def assert_same_run(got: Trace, want: Trace, rel_tol: float = 1e-4) -> None:
    """Logits within tolerance (relative to the logit scale) and the same greedy tokens.

    A greedy token may differ only where the reference itself cannot tell the two apart:
    its logits for both tokens are closer than the allowed error (a near-tie). Anything
    else is a real divergence.
    """
    tol = rel_tol * max(1.0, max(float(w.abs().max()) for w in want.logits))
    worst = max_logit_diff(got, want)
    assert worst <= tol, f"max |logit diff| {worst:.3g} > {tol:.3g}"
    assert len(got.tokens) == len(want.tokens)
    for step, (g, w) in enumerate(zip(got.tokens, want.tokens, strict=True)):
        margin = float(want.logits[step][w] - want.logits[step][g])
        assert g == w or margin <= 2 * tol, (
            f"greedy tokens differ at step {step} (reference margin {margin:.3g} > {2 * tol:.3g}):\n"
            f" got {got.tokens}\nwant {want.tokens}"
        )
