"""A query's rotary tables handed from the modelling code to the attention of the same layer.

While exporting with our attention kernel, `apply_rotary_pos_emb` (patched by
modules/rotary.py) leaves the query unrotated and puts its tables here; the attention takes
them and calls eo::rope_ring_sdpa, which rotates the query itself.
"""

from __future__ import annotations

import torch


class DeferredQueryRotary:
    """The rotary tables of a query handed on unrotated, from `apply_rotary_pos_emb` to the
    attention of the same layer (which must take them: an unrotated query is wrong)."""

    def __init__(self) -> None:
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def put(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        if self.pending is not None:
            raise RuntimeError("a query's rotary tables were never used: its attention ran without them")
        self.pending = (cos, sin)

    def take(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        tables, self.pending = self.pending, None
        return tables


QUERY_ROTARY = DeferredQueryRotary()
