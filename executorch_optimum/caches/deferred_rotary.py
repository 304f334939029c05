"""Rotary tables handed from the modelling code to the op that applies them instead.

While exporting with our kernels, `apply_rotary_pos_emb` (patched by modules/rotary.py)
leaves the query and the key unrotated and puts their tables here. The layer's cache update
takes the key's and calls eo::rope_kv_update, which rotates keys as it writes them; the
attention takes the query's and calls eo::rope_ring_sdpa, which rotates the query.
"""

from __future__ import annotations

import torch


class DeferredRotary:
    """The rotary tables of one tensor (`what`) handed on unrotated to the op of the same
    layer that must apply them (an unrotated query or key is wrong)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def put(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        if self.pending is not None:
            raise RuntimeError(self.unused_message())
        self.pending = (cos, sin)

    def take(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        tables, self.pending = self.pending, None
        return tables

    def unused_message(self) -> str:
        user = "attention" if self.what == "query" else "cache update"
        return f"a {self.what}'s rotary tables were never used: its {user} ran without them"


QUERY_ROTARY = DeferredRotary("query")
KEY_ROTARY = DeferredRotary("key")
