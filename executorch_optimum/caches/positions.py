"""The start position of the current forward call, shared by every cache layer.

Hugging Face cache layers count tokens themselves; an exported program instead receives
the positions from the runner (`cache_position`), so the exportable module hands them to
the cache before each call and every layer reads the same tensor.
"""

from __future__ import annotations

import torch


class CallPositions:
    """Holds `cache_position` ([S] int64) of the call in flight."""

    def __init__(self) -> None:
        self._positions: torch.Tensor | None = None
        self._start: int | torch.SymInt | None = None
        self._seen = 0

    def set(self, cache_position: torch.Tensor) -> None:
        if cache_position.dim() != 1:
            raise ValueError(f"cache_position must be 1-D [seq_len], got shape {tuple(cache_position.shape)}")
        self._positions = cache_position
        self._start = None
        if not torch.compiler.is_compiling():
            self._seen = int(cache_position[-1]) + 1

    @property
    def tensor(self) -> torch.Tensor:
        if self._positions is None:
            raise RuntimeError("no cache_position set: call the cache through the exportable module")
        return self._positions

    def start(self) -> int | torch.SymInt:
        """First position of this call as a (symbolic, when exporting) integer, read once."""
        if self._start is None:
            start = self.tensor[0].item()
            torch._check(start >= 0)
            self._start = start
        return self._start

    def tokens_seen(self) -> int:
        """Tokens written so far in eager mode (the end of the last call)."""
        return self._seen
