"""eo::ring_update_cache and eo::ring_sdpa in eager PyTorch against a float64 reference."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

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

    @property
    def scale(self) -> float:
        return self.head_dim**-0.5


# Chunk sequences wrap each ring many times and mix prefill chunks smaller than, equal to and
# larger than the window (and than the ring: S > C), with single-token decode steps.
CASES = {
    "mha_window_eq_ring": Case(1, 4, 4, 16, 8, 8, 0.0, (5, 1, 8, 1, 1, 3, 1, 9, 1, 1, 1, 2, 1)),
    "gqa2_softcap_chunk_gt_window": Case(2, 4, 2, 32, 12, 5, 2.0, (9, 1, 3, 1, 1, 17, 2, 1, 5, 1, 1, 1)),
    "gqa4_window_gt_chunk": Case(1, 8, 2, 64, 20, 16, 0.0, (7, 1, 1, 16, 1, 30, 1, 1, 4, 1, 13, 1)),
    "gqa2_window_gt_ring_odd_dim": Case(1, 2, 1, 24, 6, 10, 5.0, (3, 1, 1, 6, 1, 1, 2, 1, 11, 1, 1)),
    "window_one": Case(1, 2, 2, 8, 4, 1, 0.0, (3, 1, 5, 1, 1)),
    "gqa4_head_dim_tail": Case(1, 4, 1, 20, 9, 4, 1.5, (6, 1, 1, 9, 1, 3, 1, 1)),
    "tiny_head_dim_many_rows": Case(2, 3, 3, 6, 50, 40, 0.0, (45, 1, 1, 30, 1, 1)),
    "no_window_ring_wraps": Case(1, 4, 1, 8, 10, kernels.NO_WINDOW, 0.0, (4, 1, 12, 1, 1, 3)),
    # Decode over 1000-1500 keys (16-24 merged key parts), the window inside a wrapped ring.
    "long_window_key_parts_softcap": Case(1, 6, 2, 32, 1600, 1500, 3.0, (1000, 1, 700, 1, 1, 300, 1)),
    # Decode steps over 61-90 keys (4 parts) in a ring that wraps; 8 query heads per kv head
    # score through transposed key blocks.
    "decode_parts_wrapped_group8": Case(2, 8, 1, 32, 100, 90, 0.0, (60,) + (1,) * 50),
    # Cache rows of 4 KiB and more go position by position: 6 query heads per kv head (a group
    # of 4 and one of 2), a head dim with a tail past the vectors, softcap, a wrapped ring.
    "decode_page_rows_group6_softcap": Case(2, 96, 16, 72, 100, 90, 4.0, (60,) + (1,) * 50),
}


def _run_sequence(case: Case, start: int = 0, cache_dtype: torch.dtype = torch.float32) -> None:
    """A float16 cache holds each key and value rounded to nearest (torch's own rounding), and
    attention must be the float64 attention over those rounded rows."""
    kernels.load_torch_ops()
    shape = (case.batch, case.capacity, case.kv_heads, case.head_dim)
    # Empty slots hold NaN: a kernel that reads one produces NaN and fails the comparison.
    k_cache = torch.full(shape, float("nan"), dtype=cache_dtype)
    v_cache = torch.full(shape, float("nan"), dtype=cache_dtype)
    initial = k_cache.clone()
    ref = RingReference(case.batch, case.capacity, case.kv_heads, case.head_dim)
    pos = start
    for step, seq in enumerate(case.chunks):
        q = torch.randn(case.batch, seq, case.q_heads, case.head_dim) * 2.0
        k = torch.randn(case.batch, seq, case.kv_heads, case.head_dim) * 2.0
        v = torch.randn(case.batch, seq, case.kv_heads, case.head_dim)
        end_k = kernels.ring_update_cache(k, k_cache, pos)
        end_v = torch.ops.eo.ring_update_cache(v, v_cache, pos)
        assert end_k.dtype == torch.int64 and end_k.tolist() == [pos + seq] == end_v.tolist()
        ref.update(pos, k.to(cache_dtype), v.to(cache_dtype))
        torch.testing.assert_close(
            k_cache.double(), ref.expected_cache(initial, "k"), rtol=0, atol=0, equal_nan=True
        )
        torch.testing.assert_close(
            v_cache.double(), ref.expected_cache(initial, "v"), rtol=0, atol=0, equal_nan=True
        )
        got = kernels.ring_sdpa(q, k_cache, v_cache, pos, case.window, case.scale, case.softcap)
        assert got.shape == q.shape and got.dtype == torch.float32 and got.is_contiguous()
        want = ref.attend(q, pos, case.window, case.scale, case.softcap)
        torch.testing.assert_close(
            got.double(), want, rtol=1e-4, atol=2e-5, msg=lambda m, step=step: f"step {step}: {m}"
        )
        pos += seq


@pytest.mark.parametrize("name", sorted(CASES))
def test_ring_sequence_matches_reference(name):
    _run_sequence(CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_half_cache_sequence_matches_reference(name):
    _run_sequence(CASES[name], cache_dtype=torch.float16)


def test_update_more_rows_than_ring_keeps_last_rows():
    kernels.load_torch_ops()
    cache = torch.full((2, 4, 3, 5), -7.0)
    value = torch.randn(2, 11, 3, 5)
    end = torch.ops.eo.ring_update_cache(value, cache, 6)
    assert end.tolist() == [17]
    for i in range(7, 11):  # rows 7..10 = positions 13..16 -> slots 1, 2, 3, 0
        torch.testing.assert_close(cache[:, (6 + i) % 4], value[:, i], rtol=0, atol=0)


def test_update_leaves_other_slots_untouched():
    kernels.load_torch_ops()
    cache = torch.full((1, 8, 2, 4), -3.0)
    value = torch.randn(1, 3, 2, 4)
    torch.ops.eo.ring_update_cache(value, cache, 14)  # slots 6, 7, 0
    torch.testing.assert_close(cache[:, [6, 7, 0]], value, rtol=0, atol=0)
    assert bool((cache[:, 1:6] == -3.0).all())


def test_restart_at_zero_ignores_stale_slots():
    kernels.load_torch_ops()
    case = Case(1, 2, 1, 8, 8, 6, 0.0, (3,))
    k_cache = torch.randn(1, 8, 1, 8) * 100  # stale rows from an earlier, longer sequence
    v_cache = torch.randn(1, 8, 1, 8) * 100
    ref = RingReference(1, 8, 1, 8)
    q, k, v = torch.randn(1, 3, 2, 8), torch.randn(1, 3, 1, 8), torch.randn(1, 3, 1, 8)
    kernels.ring_update_cache(k, k_cache, 0)
    kernels.ring_update_cache(v, v_cache, 0)
    ref.update(0, k, v)
    got = kernels.ring_sdpa(q, k_cache, v_cache, 0, case.window, case.scale, 0.0)
    torch.testing.assert_close(
        got.double(), ref.attend(q, 0, case.window, case.scale, 0.0), rtol=1e-4, atol=2e-5
    )


def test_full_layer_on_linear_cache_is_causal_attention():
    """C = max context, no window: the ring never wraps, and ring_sdpa is exact causal SDPA."""
    _run_linear_cache(
        batch=2,
        q_heads=6,
        kv_heads=2,
        head_dim=16,
        context=32,
        chunks=(9, 1, 1, 15, 1, 5),
        scale=0.3,
        window=10**9,
    )


def _run_linear_cache(batch, q_heads, kv_heads, head_dim, context, chunks, scale, window, sharpness=1.0):
    """Chunks written in order into [B, context] caches that never wrap, each chunk attending via
    ring_sdpa, against one causal SDPA over the whole sequence (float64). Unwritten slots hold
    NaN, so reading one fails the comparison."""
    kernels.load_torch_ops()
    k_cache = torch.full((batch, context, kv_heads, head_dim), float("nan"))
    v_cache = torch.full((batch, context, kv_heads, head_dim), float("nan"))
    qs, ks, vs, outs = [], [], [], []
    pos = 0
    for seq in chunks:
        q = torch.randn(batch, seq, q_heads, head_dim) * sharpness
        k = torch.randn(batch, seq, kv_heads, head_dim)
        v = torch.randn(batch, seq, kv_heads, head_dim)
        kernels.ring_update_cache(k, k_cache, pos)
        kernels.ring_update_cache(v, v_cache, pos)
        outs.append(kernels.ring_sdpa(q, k_cache, v_cache, pos, window, scale, 0.0))
        qs, ks, vs = qs + [q], ks + [k], vs + [v]
        pos += seq
    want = _causal_reference(qs, ks, vs, scale)
    torch.testing.assert_close(torch.cat(outs, 1).double(), want, rtol=1e-4, atol=2e-5)


def _causal_reference(qs, ks, vs, scale):
    """Causal SDPA of the concatenated chunks in float64, [B, T, H, D]."""
    q_all = torch.cat(qs, 1).transpose(1, 2).double()
    group = q_all.shape[1] // ks[0].shape[2]
    k_all = torch.cat(ks, 1).transpose(1, 2).double().repeat_interleave(group, dim=1)
    v_all = torch.cat(vs, 1).transpose(1, 2).double().repeat_interleave(group, dim=1)
    want = torch.nn.functional.scaled_dot_product_attention(q_all, k_all, v_all, is_causal=True, scale=scale)
    return want.transpose(1, 2)


# (q heads, kv heads, head dim, query scale): model-sized heads, and a sharp softmax (most
# weights below exp's range) with a head dim that is no multiple of the vector width.
LONG_SHAPES = {
    "smollm2_shaped": (9, 3, 64, 1.0),
    "qwen3_shaped": (16, 8, 128, 1.0),
    "peaked_softmax_dim_tail": (4, 1, 72, 6.0),
}


@pytest.mark.parametrize(
    ("batch", "q_heads", "kv_heads", "head_dim"), [(2, 9, 3, 64), (1, 8, 1, 40), (2, 16, 8, 128)]
)
def test_every_decode_key_count_matches_reference(batch, q_heads, kv_heads, head_dim):
    """One decode step at each of 1..150 keys: 1, 2, 3, then 4 parts (16 to 38 keys each; parts
    of about 64 keys are the long-context tests'); with 8 query heads per kv head the parts
    score through transposed key blocks; Qwen3's 4 KiB cache rows go position by position."""
    torch.manual_seed(3)
    _run_linear_cache(batch, q_heads, kv_heads, head_dim, 150, (1,) * 150, head_dim**-0.5, kernels.NO_WINDOW)


@pytest.mark.parametrize("name", sorted(LONG_SHAPES))
def test_long_prefill_and_decode_match_reference(name):
    """Several 64-key blocks: the register-tiled prefill path (many rows, transposed key blocks)
    and the decode path (few rows), with chunks ending inside blocks and on their edges."""
    _run_long_sequence(*LONG_SHAPES[name])


def _run_long_sequence(q_heads: int, kv_heads: int, head_dim: int, sharpness: float) -> None:
    torch.manual_seed(1)
    _run_linear_cache(
        1,
        q_heads,
        kv_heads,
        head_dim,
        320,
        (128, 1, 1, 63, 64, 1, 45, 1),
        head_dim**-0.5,
        kernels.NO_WINDOW,
        sharpness,
    )


@pytest.mark.parametrize("name", ["smollm2_shaped", "peaked_softmax_dim_tail"])
def test_long_context_decode_matches_reference(name):
    """Decode steps over 701, 1102, 1603 and 2004 keys: 11, 18, 26 and 32 partial softmaxes over
    parts of the keys, merged."""
    q_heads, kv_heads, head_dim, sharpness = LONG_SHAPES[name]
    torch.manual_seed(2)
    chunks = (700, 1, 400, 1, 500, 1, 400, 1)
    _run_linear_cache(
        1, q_heads, kv_heads, head_dim, 2100, chunks, head_dim**-0.5, kernels.NO_WINDOW, sharpness
    )


def test_strided_inputs_are_read_in_place():
    """Hugging Face attention holds [B, H, S, D]; its transpose must give the same result."""
    kernels.load_torch_ops()
    q_bhsd = torch.randn(1, 4, 5, 16)
    k_cache = torch.randn(1, 2, 12, 16).transpose(1, 2)  # a [B, C, H, D] view of [B, H, C, D]
    v_cache = torch.randn(1, 2, 12, 16).transpose(1, 2)
    got = kernels.ring_sdpa(q_bhsd.transpose(1, 2), k_cache, v_cache, 20, 7, 0.25, 0.0)
    want = kernels.ring_sdpa(
        q_bhsd.transpose(1, 2).contiguous(), k_cache.contiguous(), v_cache.contiguous(), 20, 7, 0.25, 0.0
    )
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    k_new = torch.randn(1, 2, 3, 16)  # [B, H, S, D]
    kernels.ring_update_cache(k_new.transpose(1, 2), k_cache, 25)
    torch.testing.assert_close(k_cache[:, [1, 2, 3]], k_new.transpose(1, 2), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("batch", "seq", "q_heads", "kv_heads", "window"),
    [
        (2, 9, 8, 2, 12),
        (1, 1, 4, 1, 12),
        (1, 3, 8, 1, 12),
        (1, 3, 4, 2, 12),
        (2, 1, 9, 3, 1200),
        (2, 1, 64, 32, 300),
    ],
)
def test_threads_do_not_change_results(batch, seq, q_heads, kv_heads, window):
    """Work splits differ with the thread count (e.g. query heads split in short chunks); bits do not.
    (1, 3, 4, 2): 6 rows per kv head on one thread, 3 per item on two, across the threshold
    where key blocks are transposed. (2, 1, 9, 3) decodes over 1200 keys: merged key parts,
    whose count the threads do not set; (2, 1, 64, 32) too, with 4 KiB cache rows, which go
    position by position."""
    kernels.load_torch_ops()
    q = torch.randn(batch, seq, q_heads, 32)
    capacity = max(16, window)
    k_cache = torch.randn(batch, capacity, kv_heads, 32)
    v_cache = torch.randn(batch, capacity, kv_heads, 32)
    start = capacity + 24
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.ring_sdpa(q, k_cache, v_cache, start, window, 0.2, 3.0)
        torch.set_num_threads(2)
        two = kernels.ring_sdpa(q, k_cache, v_cache, start, window, 0.2, 3.0)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, two, rtol=0, atol=0)


@pytest.mark.parametrize(("cap", "name"), [("generic", "SSE/NEON"), ("avx2", "avx2")])
def test_narrower_simd_paths_match_reference(cap, name):
    """x86-64 machines take the widest runtime-dispatched path (AVX-512 or AVX2); the narrower
    ones (what ARM, older x86 and AVX2-only CPUs run) must be right too. The choice is made once
    per process, hence a subprocess capped by EO_KERNELS_SIMD."""
    info = kernels.build_info()["simd"]
    if cap == "avx2" and "SSE/NEON" in info:
        name = "SSE/NEON"  # a CPU without AVX2 runs the portable path whatever the cap
    code = (
        "import torch\n"
        "torch.manual_seed(0)\n"
        "from tests.kernels import test_ring_kernels as t\n"
        "from executorch_optimum import kernels\n"
        f"assert {name!r} in kernels.build_info()['simd'], kernels.build_info()['simd']\n"
        "for name in sorted(t.CASES): t._run_sequence(t.CASES[name])\n"
        "for name in sorted(t.CASES): t._run_sequence(t.CASES[name], cache_dtype=torch.float16)\n"
        "t.test_full_layer_on_linear_cache_is_causal_attention()\n"
        "for name in sorted(t.LONG_SHAPES): t._run_long_sequence(*t.LONG_SHAPES[name])\n"
    )
    env = dict(os.environ, EO_KERNELS_SIMD=cap, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (torch.randn(1, 2, 3, 8), torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8), 0),
            "multiple of kv heads",
        ),
        ((torch.randn(1, 2, 4, 8), torch.randn(1, 4, 2, 8), torch.randn(1, 5, 2, 8), 0), "same shape"),
        ((torch.randn(1, 2, 4, 8), torch.randn(1, 4, 2, 4), torch.randn(1, 4, 2, 4), 0), "head dim"),
        ((torch.randn(1, 2, 4, 8), torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8), -1), "start_pos"),
        ((torch.randn(1, 2, 4, 8).double(), torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8), 0), "float32"),
    ],
)
def test_ring_sdpa_rejects_bad_arguments(args, message):
    kernels.load_torch_ops()
    with pytest.raises(RuntimeError, match=message):
        torch.ops.eo.ring_sdpa(*args, 4, 1.0, 0.0)


def test_ring_update_rejects_bad_arguments():
    kernels.load_torch_ops()
    with pytest.raises(RuntimeError, match="agree in B, H and D"):
        torch.ops.eo.ring_update_cache(torch.randn(1, 2, 3, 8), torch.zeros(1, 4, 2, 8), 0)
    with pytest.raises(RuntimeError, match="start_pos"):
        torch.ops.eo.ring_update_cache(torch.randn(1, 2, 2, 8), torch.zeros(1, 4, 2, 8), -3)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.eo.ring_update_cache(torch.randn(1, 2, 2, 8), torch.zeros(1, 4, 2, 8, dtype=torch.int32), 0)


@pytest.mark.parametrize("table_batch", [1, 2])
def test_rope_ring_sdpa_is_transformers_rotary_then_ring_sdpa(table_batch):
    """Queries rotated by the op itself equal transformers' apply_rotary_pos_emb followed by
    ring_sdpa (strided queries read in place; tables shared by the batch or per batch row)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    kernels.load_torch_ops()
    torch.manual_seed(0)
    batch, seq, q_heads, kv_heads, dim, capacity, start = 2, 5, 4, 2, 16, 12, 3
    q = torch.randn(batch, q_heads, seq, dim).transpose(1, 2)  # [B, S, H, D], strided
    k_cache, v_cache = (
        torch.randn(batch, capacity, kv_heads, dim),
        torch.randn(batch, capacity, kv_heads, dim),
    )
    angles = torch.rand(table_batch, seq, dim // 2) * 6.0
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    got = torch.ops.eo.rope_ring_sdpa(q, cos, sin, k_cache, v_cache, start, 6, 0.25, 2.0)
    rotated, _ = apply_rotary_pos_emb(q, q, cos, sin, unsqueeze_dim=2)
    want = torch.ops.eo.ring_sdpa(rotated, k_cache, v_cache, start, 6, 0.25, 2.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, torch.ops.eo.ring_sdpa(q, k_cache, v_cache, start, 6, 0.25, 2.0))


@pytest.mark.parametrize(
    ("cos_shape", "dim", "message"),
    [((1, 3, 8), 8, "S, D"), ((1, 2, 9), 9, "even"), ((1, 2, 8, 1), 8, "3-D")],
)
def test_rope_ring_sdpa_rejects_bad_tables(cos_shape, dim, message):
    kernels.load_torch_ops()
    q, cache = torch.randn(1, 2, 2, dim), torch.randn(1, 4, 2, dim)
    table = torch.randn(cos_shape)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.eo.rope_ring_sdpa(q, table, table, cache, cache, 0, 0, 1.0, 0.0)


@pytest.mark.parametrize(("table_batch", "seq", "capacity"), [(1, 5, 12), (2, 5, 12), (1, 7, 4)])
def test_rope_kv_update_is_transformers_rotary_then_ring_update(table_batch, seq, capacity):
    """Keys rotated as they are written equal transformers' apply_rotary_pos_emb followed by
    ring_update_cache, and values are written as ring_update_cache writes them (strided inputs;
    tables shared or per batch row; a call longer than the ring keeps its last rows)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    kernels.load_torch_ops()
    torch.manual_seed(0)
    batch, heads, dim, start = 2, 3, 16, 9
    key = torch.randn(batch, heads, seq, dim).transpose(1, 2)  # [B, S, H, D], strided
    value = torch.randn(batch, heads, seq, dim).transpose(1, 2)
    angles = torch.rand(table_batch, seq, dim // 2) * 6.0
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    k_cache, v_cache = torch.randn(batch, capacity, heads, dim), torch.randn(batch, capacity, heads, dim)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    end = torch.ops.eo.rope_kv_update(key, value, cos, sin, k_cache, v_cache, start)
    rotated, _ = apply_rotary_pos_emb(key, key, cos, sin, unsqueeze_dim=2)
    torch.ops.eo.ring_update_cache(rotated, want_k, start)
    torch.ops.eo.ring_update_cache(value, want_v, start)
    assert end.tolist() == [start + seq]
    torch.testing.assert_close(k_cache, want_k, rtol=1e-6, atol=1e-6)
    assert torch.equal(v_cache, want_v)
    unrotated = torch.randn(batch, capacity, heads, dim)
    torch.ops.eo.ring_update_cache(key, unrotated, start)
    assert not torch.allclose(k_cache, unrotated)


@pytest.mark.parametrize("norm", [False, True])
def test_rope_kv_update_into_half_caches_rounds_the_float_results(norm):
    """Into float16 caches the (normalised and) rotated keys and the values are the float32
    caches' rows rounded to nearest: the same arithmetic, then one rounding."""
    kernels.load_torch_ops()
    torch.manual_seed(0)
    batch, seq, heads, dim, capacity, start = 2, 6, 3, 24, 5, 7
    key = torch.randn(batch, heads, seq, dim).transpose(1, 2) * 3.0
    value = torch.randn(batch, heads, seq, dim).transpose(1, 2)
    angles = torch.rand(1, seq, dim // 2) * 6.0
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    norm_args = (torch.rand(dim) + 0.5, 1e-6) if norm else ()
    op = torch.ops.eo.norm_rope_kv_update if norm else torch.ops.eo.rope_kv_update
    wide = [torch.zeros(batch, capacity, heads, dim) for _ in range(2)]
    narrow = [torch.zeros(batch, capacity, heads, dim, dtype=torch.float16) for _ in range(2)]
    op(key, value, cos, sin, *wide, start, *norm_args)
    end = op(key, value, cos, sin, *narrow, start, *norm_args)
    assert end.tolist() == [start + seq]
    assert torch.equal(narrow[0], wide[0].half()) and torch.equal(narrow[1], wide[1].half())
    assert not torch.equal(narrow[0].float(), wide[0])  # the rounding happened


def test_caches_of_mixed_dtypes_are_rejected():
    kernels.load_torch_ops()
    q = torch.randn(1, 2, 4, 8)
    k_cache, v_cache = torch.zeros(1, 4, 2, 8, dtype=torch.float16), torch.zeros(1, 4, 2, 8)
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.eo.ring_sdpa(q, k_cache, v_cache, 0, 0, 1.0, 0.0)
    table = torch.ones(1, 2, 8)
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ops.eo.rope_kv_update(q[:, :, :2], q[:, :, :2], table, table, k_cache, v_cache, 0)
    with pytest.raises(RuntimeError, match="float32 or float16"):
        torch.ops.eo.ring_update_cache(q[:, :, :2], k_cache.bfloat16(), 0)


def _head_norm(dim: int) -> torch.nn.Module:
    """transformers' Qwen3 q/k norm with a random weight: the reference for the fused norm."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    norm = Qwen3RMSNorm(dim, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(dim) * 2.0 - 0.5)
    return norm


def test_norm_rope_ops_normalise_each_row_first():
    """norm_rope_ring_sdpa and norm_rope_kv_update equal Qwen3's RMSNorm
    (transformers' module) then rotary then the plain op, for strided rows."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    kernels.load_torch_ops()
    torch.manual_seed(0)
    batch, seq, q_heads, kv_heads, dim, capacity, start = 2, 5, 4, 2, 16, 12, 3
    q = torch.randn(batch, q_heads, seq, dim).transpose(1, 2) * 3.0  # [B, S, H, D], strided
    key = torch.randn(batch, kv_heads, seq, dim).transpose(1, 2) * 3.0
    value = torch.randn(batch, seq, kv_heads, dim)
    angles = torch.rand(1, seq, dim // 2) * 6.0
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    q_norm, k_norm = _head_norm(dim), _head_norm(dim)
    k_cache, v_cache = (
        torch.randn(batch, capacity, kv_heads, dim),
        torch.randn(batch, capacity, kv_heads, dim),
    )
    want_k, want_v = k_cache.clone(), v_cache.clone()
    with torch.no_grad():
        end = torch.ops.eo.norm_rope_kv_update(
            key, value, cos, sin, k_cache, v_cache, start, k_norm.weight, 1e-5
        )
        rotated_k, _ = apply_rotary_pos_emb(k_norm(key), key, cos, sin, unsqueeze_dim=2)
        torch.ops.eo.ring_update_cache(rotated_k, want_k, start)
        torch.ops.eo.ring_update_cache(value, want_v, start)
        assert end.tolist() == [start + seq]
        torch.testing.assert_close(k_cache, want_k, rtol=1e-5, atol=1e-5)
        assert torch.equal(v_cache, want_v)

        got = torch.ops.eo.norm_rope_ring_sdpa(
            q, cos, sin, k_cache, v_cache, start, 6, 0.25, 0.0, q_norm.weight, 1e-5
        )
        rotated_q, _ = apply_rotary_pos_emb(q_norm(q), q, cos, sin, unsqueeze_dim=2)
        want = torch.ops.eo.ring_sdpa(rotated_q, k_cache, v_cache, start, 6, 0.25, 0.0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        unnormed = torch.ops.eo.rope_ring_sdpa(q, cos, sin, k_cache, v_cache, start, 6, 0.25, 0.0)
        assert not torch.allclose(got, unnormed, rtol=1e-3, atol=1e-3)


def test_norm_rope_ops_reject_a_norm_weight_that_does_not_fit():
    """The errors name the op the user's program called, not the shared implementation."""
    kernels.load_torch_ops()
    rows, cache, table = torch.randn(1, 2, 2, 8), torch.zeros(1, 4, 2, 8), torch.ones(1, 2, 8)
    with pytest.raises(RuntimeError, match="eo::norm_rope_ring_sdpa: .*head_dim elements"):
        torch.ops.eo.norm_rope_ring_sdpa(
            rows, table, table, cache, cache, 0, 0, 1.0, 0.0, torch.ones(4), 1e-6
        )
    with pytest.raises(RuntimeError, match="eo::norm_rope_kv_update: .*head_dim elements"):
        torch.ops.eo.norm_rope_kv_update(
            rows, rows, table, table, cache, cache.clone(), 0, torch.ones(2, 4), 1e-6
        )
    with pytest.raises(RuntimeError, match="eo::norm_rope_kv_update.*float32"):
        torch.ops.eo.norm_rope_kv_update(
            rows, rows, table, table, cache, cache.clone(), 0, torch.ones(8).double(), 1e-6
        )


def test_rope_kv_update_rejects_bad_arguments():
    kernels.load_torch_ops()
    key, cache, table = torch.randn(1, 2, 2, 8), torch.zeros(1, 4, 2, 8), torch.randn(1, 2, 8)
    with pytest.raises(RuntimeError, match="same shapes"):
        torch.ops.eo.rope_kv_update(
            key, torch.randn(1, 2, 2, 8), table, table, cache, torch.zeros(1, 5, 2, 8), 0
        )
    with pytest.raises(RuntimeError, match="S, D"):
        torch.ops.eo.rope_kv_update(key, key, table[:, :1], table[:, :1], cache, cache.clone(), 0)
    with pytest.raises(RuntimeError, match="start_pos"):
        torch.ops.eo.rope_kv_update(key, key, table, table, cache, cache.clone(), -1)
    with pytest.raises(RuntimeError, match="float32"):
        torch.ops.eo.rope_kv_update(key, key, table.double(), table.double(), cache, cache.clone(), 0)


def test_meta_kernels_give_shapes():
    kernels.load_torch_ops()
    q = torch.empty(2, 5, 8, 16, device="meta")
    k = torch.empty(2, 12, 2, 16, device="meta")
    assert torch.ops.eo.ring_sdpa(q, k, k, 3, 4, 1.0, 0.0).shape == (2, 5, 8, 16)
    table = torch.empty(1, 5, 16, device="meta")
    assert torch.ops.eo.rope_ring_sdpa(q, table, table, k, k, 3, 4, 1.0, 0.0).shape == (2, 5, 8, 16)
    end = torch.ops.eo.ring_update_cache(torch.empty(2, 5, 2, 16, device="meta"), k, 3)
    assert end.shape == (1,) and end.dtype == torch.int64
    rows = torch.empty(2, 5, 2, 16, device="meta")
    end = torch.ops.eo.rope_kv_update(rows, rows, table, table, k, k.clone(), 3)
    assert end.shape == (1,) and end.dtype == torch.int64


def test_build_info_module():
    info = kernels.build_info()
    assert info["et_kernels_use_threadpool"] is True
    assert info["optimized"] is True
    assert {
        "eo::ring_update_cache",
        "eo::ring_update_cache.out",
        "eo::ring_sdpa",
        "eo::ring_sdpa.out",
        "eo::rope_ring_sdpa",
        "eo::rope_ring_sdpa.out",
    } <= set(info["ops"])
    kernels.load_torch_ops()
    for schema in info["schemas"]:
        name = schema.split("(")[0].removeprefix("eo::")
        op, _, overload = name.partition(".")
        assert str(getattr(torch.ops.eo, op).__getattr__(overload or "default")._schema) == schema


def test_slot_positions_follow_the_ring_contract():
    from executorch_optimum.kernels import _eo_kernels_info as info

    assert info.slot_positions(0, 4) == [-1, -1, -1, -1]
    assert info.slot_positions(3, 4) == [0, 1, 2, -1]
    assert info.slot_positions(10, 4) == [8, 9, 6, 7]
    ref = RingReference(1, 5, 1, 1)
    for pos in range(23):
        ref.update(pos, torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
        assert info.slot_positions(pos + 1, 5) == ref.slot_pos
    assert info.attended_range(pos=9, end=10, capacity=4, window=3) == (7, 9)
    assert info.attended_range(pos=9, end=10, capacity=4, window=0) == (6, 9)


def test_reads_a_full_cache_written_by_llama_update_cache():
    """Full layers may keep ExecuTorch's llama::update_cache (slot = position) and attend with ring_sdpa."""
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers llama::*)

    kernels.load_torch_ops()
    k_llama, v_llama = torch.zeros(1, 24, 2, 16), torch.zeros(1, 24, 2, 16)
    k_ring, v_ring = torch.zeros(1, 24, 2, 16), torch.zeros(1, 24, 2, 16)
    pos = 0
    for seq in (7, 1, 1, 9, 1):
        q, k, v = torch.randn(1, seq, 4, 16), torch.randn(1, seq, 2, 16), torch.randn(1, seq, 2, 16)
        torch.ops.llama.update_cache(k, k_llama, pos)
        torch.ops.llama.update_cache(v, v_llama, pos)
        kernels.ring_update_cache(k, k_ring, pos)
        kernels.ring_update_cache(v, v_ring, pos)
        torch.testing.assert_close(k_llama, k_ring, rtol=0, atol=0)
        got = kernels.ring_sdpa(q, k_llama, v_llama, pos, kernels.NO_WINDOW, 0.25, 0.0)
        want = kernels.ring_sdpa(q, k_ring, v_ring, pos, kernels.NO_WINDOW, 0.25, 0.0)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        pos += seq
