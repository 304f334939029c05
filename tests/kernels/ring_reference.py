"""A float64 model of a ring KV cache and of sliding-window attention, written for clarity.

It keeps the full history of keys/values by absolute position and an explicit list of which
position each slot holds (updated row by row, in order), then attends with explicit masks over
absolute positions. It shares nothing with the C++ kernels (which derive slot positions).
"""

from __future__ import annotations

import torch


class RingReference:
    def __init__(self, batch: int, capacity: int, kv_heads: int, head_dim: int) -> None:
        self.batch, self.capacity, self.kv_heads, self.head_dim = batch, capacity, kv_heads, head_dim
        self.keys: dict[int, torch.Tensor] = {}  # absolute position -> [B, Hkv, D] float64
        self.values: dict[int, torch.Tensor] = {}
        self.slot_pos = [-1] * capacity  # absolute position held by each slot, -1 = empty

    def update(self, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Writes rows of k, v [B, S, Hkv, D] one by one; a later row overwrites an earlier one."""
        for i in range(k.shape[1]):
            pos = start_pos + i
            self.keys[pos] = k[:, i].double()
            self.values[pos] = v[:, i].double()
            self.slot_pos[pos % self.capacity] = pos

    def expected_cache(self, initial: torch.Tensor, which: str = "k") -> torch.Tensor:
        """The ring's contents [B, C, Hkv, D]: written slots from the history, others `initial`."""
        history = self.keys if which == "k" else self.values
        out = initial.clone().double()
        for slot, pos in enumerate(self.slot_pos):
            if pos >= 0:
                out[:, slot] = history[pos]
        return out

    def attended(self, pos: int, window: int) -> list[int]:
        """Absolute key positions query `pos` sees: present in the ring, pos - window < q <= pos."""
        return sorted(q for q in self.slot_pos if 0 <= q <= pos and (window <= 0 or q > pos - window))

    def attend(
        self, query: torch.Tensor, start_pos: int, window: int, scale: float, softcap: float
    ) -> torch.Tensor:
        """query [B, S, Hq, D] -> [B, S, Hq, D] float64; a query that sees no key gets zeros."""
        batch, seq, q_heads, head_dim = query.shape
        group = q_heads // self.kv_heads
        out = torch.zeros(batch, seq, q_heads, head_dim, dtype=torch.float64)
        for i in range(seq):
            positions = self.attended(start_pos + i, window)
            if not positions:
                continue
            keys = torch.stack([self.keys[p] for p in positions], dim=1)  # [B, n, Hkv, D]
            values = torch.stack([self.values[p] for p in positions], dim=1)
            keys = keys.repeat_interleave(group, dim=2)  # query head h reads kv head h // group
            values = values.repeat_interleave(group, dim=2)
            scores = torch.einsum("bhd,bnhd->bhn", query[:, i].double(), keys) * scale
            if softcap > 0:
                scores = softcap * torch.tanh(scores / softcap)
            weights = torch.softmax(scores, dim=-1)
            out[:, i] = torch.einsum("bhn,bnhd->bhd", weights, values)
        return out
