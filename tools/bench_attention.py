"""Benchmark: full causal attention, ExecuTorch's `llama::custom_sdpa` vs our `eo::ring_sdpa`.

Both ops read the same `[B, C, Hkv, D]` cache (what `llama::update_cache` writes, slot =
position) and compute exact causal GQA attention of `S` queries at positions `start ..
start+S-1`. For model-shaped heads (SmolLM2-135M: 9 query / 3 kv heads of 64; Qwen3-0.6B: 16 / 8
of 128) it times a prefill chunk from position 0 and single-token decode steps at two cache
fills, through the ops' PyTorch registrations (the same C++ as their ExecuTorch kernels), with
torch's thread pool as the parallel backend. Calls alternate between the ops; min and median
over the repetitions. Each op's output is checked against float64 SDPA first.

    ./bazelw run //tools:bench_attention -- --threads 1

Timings on a shared machine drift between runs; compare the two ops within one run.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

# Before torch loads: MKL's OpenMP workers (inside custom_sdpa) must not spin against torch's.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHAPES = {"smollm2_135m": (9, 3, 64), "qwen3_0_6b": (16, 8, 128)}
# (queries, start position): a prefill chunk, decode at a short and at a long cache fill.
CALLS = ((128, 0), (1, 192), (1, 1000))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bazel run //tools:bench_attention --", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--threads", type=_positive, default=1, help="torch threads for both ops (default: %(default)s)"
    )
    p.add_argument(
        "--repeats",
        type=_positive,
        default=200,
        help="timed calls per op and case; prefill gets a fifth (default: %(default)s)",
    )
    p.add_argument("--context", type=_positive, default=2048, help="cache slots C (default: %(default)s)")
    return p


def _reference(q, k, v, start: int, scale: float):  # noqa: ANN001, ANN202 (torch tensors)
    import torch

    seq, heads, kv_heads = q.shape[1], q.shape[2], k.shape[2]
    end = start + seq
    keys = k[:, :end].double().transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    values = v[:, :end].double().transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    visible = torch.arange(end)[None, :] <= torch.arange(start, end)[:, None]
    out = torch.nn.functional.scaled_dot_product_attention(
        q.double().transpose(1, 2), keys, values, attn_mask=visible, scale=scale
    )
    return out.transpose(1, 2)


def _time_alternating(first, second, repeats: int) -> tuple[list[float], list[float]]:  # noqa: ANN001
    first(), second()  # warm-up
    a, b = [], []
    for i in range(repeats):
        for fn, out in ((first, a), (second, b)) if i % 2 == 0 else ((second, b), (first, a)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return a, b


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (registers llama::*)

    from executorch_optimum import kernels

    kernels.load_torch_ops()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads}, cache slots {args.context}, simd {kernels.build_info()['simd']}")
    print(
        "| model | queries @ start | custom_sdpa us min / median | ring_sdpa us min / median | speedup (median) |"
    )
    print("|---|---|---|---|---|")
    for model, (heads, kv_heads, head_dim) in SHAPES.items():
        k = torch.randn(1, args.context, kv_heads, head_dim)
        v = torch.randn(1, args.context, kv_heads, head_dim)
        scale = head_dim**-0.5
        for seq, start in CALLS:
            if start + seq > args.context:
                continue
            q = torch.randn(1, seq, heads, head_dim)

            et = functools.partial(torch.ops.llama.custom_sdpa, q, k, v, start, None, 0.0, True, scale)
            eo = functools.partial(torch.ops.eo.ring_sdpa, q, k, v, start, kernels.NO_WINDOW, scale, 0.0)
            want = _reference(q, k, v, start, scale)
            for name, fn in (("custom_sdpa", et), ("ring_sdpa", eo)):
                err = (fn().double() - want).abs().max().item()
                if err > 1e-4:
                    print(f"error: {name} differs from float64 SDPA by {err:.2e} ({model}, {seq} @ {start})")
                    return 1
            repeats = args.repeats if seq == 1 else max(1, args.repeats // 5)
            a, b = _time_alternating(et, eo, repeats)
            med_a, med_b = statistics.median(a) * 1e6, statistics.median(b) * 1e6
            print(
                f"| {model} | {seq} @ {start} | {min(a) * 1e6:.1f} / {med_a:.1f} | "
                f"{min(b) * 1e6:.1f} / {med_b:.1f} | {med_a / med_b:.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
