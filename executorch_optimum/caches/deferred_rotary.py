"""Rotary tables handed from the modelling code to the op that applies them instead.

While exporting with our kernels, `apply_rotary_pos_emb` (patched by modules/rotary.py)
leaves the query and the key unrotated and puts their tables here. The layer's cache update
takes the key's and calls eo::rope_kv_update, which rotates keys as it writes them; the
attention takes the query's and calls eo::rope_ring_sdpa, which rotates the query. A per-head
RMS norm applied right before rotary (Qwen3's q_norm / k_norm) can be handed on the same way:
the norm module leaves its input as it is and puts its weight and epsilon here first.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class HeadNorm(NamedTuple):
    """`x * rsqrt(mean(x^2, -1) + eps) * weight` over each head's row, still to be applied."""

    weight: torch.Tensor
    eps: float

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The norm in plain torch, for a consumer that cannot fuse it."""
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class RotaryTables(NamedTuple):
    """A deferred tensor's rotary tables [B, S, D], and the head norm to apply before them."""

    cos: torch.Tensor
    sin: torch.Tensor
    norm: HeadNorm | None = None

    def op(self, name: str) -> tuple[object, tuple]:
        """Our op `eo::<name>` (`rope_ring_sdpa`, `rope_kv_update`) for these tables, and the
        arguments that follow its own: its `norm_` variant and the norm's when there is one."""
        if self.norm is None:
            return getattr(torch.ops.eo, name), ()
        return getattr(torch.ops.eo, f"norm_{name}"), (self.norm.weight, self.norm.eps)


class DeferredRotary:
    """The rotary tables (and any head norm before them) of one tensor (`what`) handed on
    unrotated to the op of the same layer that must apply them (an unrotated query or key is
    wrong)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.pending: RotaryTables | None = None
        self.pending_norm: HeadNorm | None = None

    def put_norm(self, norm: HeadNorm) -> None:
        if self.pending_norm is not None:
            raise RuntimeError(f"a {self.what}'s head norm was never applied: no rotary followed it")
        self.pending_norm = norm

    def take_norm(self) -> HeadNorm | None:
        norm, self.pending_norm = self.pending_norm, None
        return norm

    def put(self, cos: torch.Tensor, sin: torch.Tensor, norm: HeadNorm | None = None) -> None:
        if self.pending is not None:
            raise RuntimeError(self.unused_message())
        self.pending = RotaryTables(cos, sin, norm)

    def take(self) -> RotaryTables | None:
        tables, self.pending = self.pending, None
        return tables

    def clear(self) -> None:
        self.pending = self.pending_norm = None

    def unused_message(self) -> str:
        user = "attention" if self.what == "query" else "cache update"
        return f"a {self.what}'s rotary tables were never used: its {user} ran without them"


QUERY_ROTARY = DeferredRotary("query")
KEY_ROTARY = DeferredRotary("key")
