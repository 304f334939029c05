"""The ring ops exported to a .pte and run in the ExecuTorch runtime, against a float64 reference.

The ring caches are registered buffers that the program mutates in place across calls; the
runtime's initial buffer contents are unspecified, which is fine: the kernels read only slots
written earlier in the same sequence (and the comparison below only looks at those).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from executorch.exir import to_edge
from executorch.runtime import Runtime

from executorch_optimum import kernels
from tests.kernels.ring_reference import RingReference


@dataclasses.dataclass(frozen=True)
class Case:
    batch: int
    q_heads: int
    kv_heads: int
    head_dim: int
    capacity: int
    window: int
    softcap: float
    chunks: tuple[int, ...]


CASES = {
    "gqa2_softcap_window_lt_chunk": Case(1, 4, 2, 32, 12, 5, 2.0, (9, 1, 3, 1, 1, 16, 2, 1, 1, 7, 1)),
    "gqa4_window_gt_chunk": Case(2, 8, 2, 16, 20, 16, 0.0, (7, 1, 1, 16, 1, 3, 1, 1, 4, 1, 13, 1)),
    "mha_full_attention": Case(1, 2, 2, 8, 64, kernels.NO_WINDOW, 0.0, (6, 1, 16, 1, 1, 9)),
}


class RingAttention(torch.nn.Module):
    def __init__(self, case: Case, cache_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.case = case
        shape = (case.batch, case.capacity, case.kv_heads, case.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=cache_dtype))
        self.register_buffer("v_cache", torch.zeros(shape, dtype=cache_dtype))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, input_pos: torch.Tensor):
        start = input_pos[0].item()
        torch._check(start >= 0)
        end = torch.ops.eo.ring_update_cache(k, self.k_cache, start)
        torch.ops.eo.ring_update_cache(v, self.v_cache, start)
        c = self.case
        out = torch.ops.eo.ring_sdpa(
            q, self.k_cache, self.v_cache, start, c.window, c.head_dim**-0.5, c.softcap
        )
        return out, end, self.k_cache.clone()


def _inputs(case: Case, seq: int, pos: int) -> tuple[torch.Tensor, ...]:
    return (
        torch.randn(case.batch, seq, case.q_heads, case.head_dim) * 2.0,
        torch.randn(case.batch, seq, case.kv_heads, case.head_dim) * 2.0,
        torch.randn(case.batch, seq, case.kv_heads, case.head_dim),
        torch.tensor([pos], dtype=torch.int64),
    )


def _export(case: Case, path, cache_dtype: torch.dtype) -> None:
    seq = torch.export.Dim("seq", min=1, max=max(case.chunks))
    exported = torch.export.export(
        RingAttention(case, cache_dtype),
        _inputs(case, 2, 0),
        dynamic_shapes=({1: seq}, {1: seq}, {1: seq}, None),
    )
    program = to_edge(exported).to_executorch()
    targets = {str(n.target) for n in program.exported_program().graph.nodes if n.op == "call_function"}
    assert {"eo.ring_update_cache.out", "eo.ring_sdpa.out"} <= targets, targets
    path.write_bytes(program.buffer)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", sorted(CASES))
def test_pte_ring_sequence_matches_reference(name, cache_dtype, tmp_path):
    """A float16 cache: the runtime's kernels store rows rounded as torch rounds them, and attend
    over the rounded rows."""
    case = CASES[name]
    kernels.load_torch_ops()
    kernels.load_et_kernels()
    pte = tmp_path / f"{name}.pte"
    _export(case, pte, cache_dtype)
    method = Runtime.get().load_program(pte).load_method("forward")

    eager = RingAttention(case, cache_dtype)
    ref = RingReference(case.batch, case.capacity, case.kv_heads, case.head_dim)
    scale = case.head_dim**-0.5
    pos = 0
    for step, seq in enumerate(case.chunks):
        q, k, v, input_pos = _inputs(case, seq, pos)
        got, end, k_cache = method.execute([q, k, v, input_pos])
        assert k_cache.dtype == cache_dtype
        ref.update(pos, k.to(cache_dtype), v.to(cache_dtype))
        want = ref.attend(q, pos, case.window, scale, case.softcap)
        torch.testing.assert_close(
            got.double(), want, rtol=1e-4, atol=2e-5, msg=lambda m, step=step: f"step {step}: {m}"
        )
        assert end.tolist() == [pos + seq]
        written = [slot for slot, p in enumerate(ref.slot_pos) if p >= 0]
        expected = ref.expected_cache(torch.zeros_like(k_cache), "k")
        torch.testing.assert_close(k_cache[:, written].double(), expected[:, written], rtol=0, atol=0)
        # The same kernels in eager PyTorch: identical math, identical bits.
        eager_out, _, _ = eager(q, k, v, input_pos)
        torch.testing.assert_close(got, eager_out, rtol=0, atol=0)
        pos += seq


class TinyAttentionBlock(torch.nn.Module):
    """Projections (delegated to XNNPACK) around our ring ops (run by our ExecuTorch kernels)."""

    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj = torch.nn.Linear(32, 64), torch.nn.Linear(32, 32)
        self.v_proj, self.o_proj = torch.nn.Linear(32, 32), torch.nn.Linear(64, 32)
        self.register_buffer("k_cache", torch.zeros(1, 10, 2, 16))
        self.register_buffer("v_cache", torch.zeros(1, 10, 2, 16))

    def forward(self, x: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        start = input_pos[0].item()
        torch._check(start >= 0)
        q = self.q_proj(x).view(batch, seq, 4, 16)
        kernels.ring_update_cache(self.k_proj(x).view(batch, seq, 2, 16), self.k_cache, start)
        kernels.ring_update_cache(self.v_proj(x).view(batch, seq, 2, 16), self.v_cache, start)
        out = kernels.ring_sdpa(q, self.k_cache, self.v_cache, start, 6, 0.25, 0.0)
        return self.o_proj(out.reshape(batch, seq, 64))


def test_pte_with_xnnpack_delegation_matches_eager(tmp_path):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    kernels.load_torch_ops()
    kernels.load_et_kernels()
    model = TinyAttentionBlock().eval()
    seq = torch.export.Dim("seq", min=1, max=5)
    exported = torch.export.export(
        model, (torch.randn(1, 3, 32), torch.tensor([0])), dynamic_shapes=({1: seq}, None)
    )
    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
    targets = {str(n.target) for n in program.exported_program().graph.nodes if n.op == "call_function"}
    assert {"eo.ring_update_cache.out", "eo.ring_sdpa.out", "executorch_call_delegate"} <= targets, targets
    pte = tmp_path / "block.pte"
    pte.write_bytes(program.buffer)
    method = Runtime.get().load_program(pte).load_method("forward")
    pos = 0
    for seq_len in (5, 1, 1, 4, 1, 5, 1, 1):  # wraps the 10-slot ring
        x, input_pos = torch.randn(1, seq_len, 32), torch.tensor([pos])
        (got,) = method.execute([x, input_pos])
        torch.testing.assert_close(got, model(x, input_pos), rtol=1e-5, atol=1e-5)
        pos += seq_len


class RopeRingAttention(RingAttention):
    """RingAttention whose queries arrive unrotated: eo::rope_ring_sdpa rotates them."""

    def forward(self, q, k, v, input_pos, cos, sin):  # noqa: ANN001, ANN201
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch.ops.eo.ring_update_cache(k, self.k_cache, start)
        torch.ops.eo.ring_update_cache(v, self.v_cache, start)
        c = self.case
        return torch.ops.eo.rope_ring_sdpa(
            q, cos, sin, self.k_cache, self.v_cache, start, c.window, c.head_dim**-0.5, c.softcap
        )


class RopeKvRingAttention(RingAttention):
    """Queries and keys arrive unrotated: eo::rope_kv_update rotates the keys as it writes them."""

    def forward(self, q, k, v, input_pos, cos, sin):  # noqa: ANN001, ANN201
        start = input_pos[0].item()
        torch._check(start >= 0)
        torch.ops.eo.rope_kv_update(k, v, cos, sin, self.k_cache, self.v_cache, start)
        c = self.case
        return torch.ops.eo.rope_ring_sdpa(
            q, cos, sin, self.k_cache, self.v_cache, start, c.window, c.head_dim**-0.5, c.softcap
        )


@pytest.mark.parametrize(
    ("module", "op"),
    [(RopeRingAttention, "eo.rope_ring_sdpa.out"), (RopeKvRingAttention, "eo.rope_kv_update.out")],
)
def test_pte_rope_ops_match_eager_and_reference(module, op, tmp_path):
    """The ExecuTorch kernels of rope_ring_sdpa and rope_kv_update: the eager ops' bits, and
    transformers' rotary followed by attention in float64."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    case = CASES["gqa2_softcap_window_lt_chunk"]
    kernels.load_torch_ops()
    kernels.load_et_kernels()
    torch.manual_seed(0)

    def tables(seq: int, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        angles = torch.arange(pos, pos + seq)[:, None] * torch.rand(case.head_dim // 2)
        angles = torch.cat([angles, angles], -1)[None]
        return angles.cos(), angles.sin()

    seq_dim = torch.export.Dim("seq", min=1, max=max(case.chunks))
    example = (*_inputs(case, 2, 0), *tables(2, 0))
    dynamic = ({1: seq_dim}, {1: seq_dim}, {1: seq_dim}, None, {1: seq_dim}, {1: seq_dim})
    program = to_edge(torch.export.export(module(case), example, dynamic_shapes=dynamic)).to_executorch()
    targets = {str(n.target) for n in program.exported_program().graph.nodes if n.op == "call_function"}
    assert op in targets, targets
    method = Runtime.get().load_program(program.buffer).load_method("forward")

    eager = module(case)
    ref = RingReference(case.batch, case.capacity, case.kv_heads, case.head_dim)
    pos = 0
    for seq in case.chunks:
        q, k, v, input_pos = _inputs(case, seq, pos)
        cos, sin = tables(seq, pos)
        (got,) = method.execute([q, k, v, input_pos, cos, sin])
        torch.testing.assert_close(got, eager(q, k, v, input_pos, cos, sin), rtol=0, atol=0)
        rotated, rotated_k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)
        ref.update(pos, rotated_k if module is RopeKvRingAttention else k, v)
        want = ref.attend(rotated, pos, case.window, case.head_dim**-0.5, case.softcap)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=2e-5)
        pos += seq
