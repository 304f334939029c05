"""Memory-bandwidth roofline of decode: copy bandwidth / weight bytes read per token.

Bandwidth: a large buffer copied with torch (`dst.copy_(src)`) on the benchmark's thread
count, best of several runs, counting bytes read + bytes written (STREAM "Copy"
convention: 2 x buffer size per copy, write-allocate traffic not counted). Decode only
reads weights, and a copy's uncounted write-allocate traffic makes it the lower figure, so
the read bandwidth (`src.sum()`, bytes read) is measured too and gives a second roofline.
The runner measures both before and after the runs and keeps the best (a shared machine's
load varies): a roofline is an upper bound.

Bytes per decoded token: every weight a decode step reads in full, in the exported form:
- fp32: every parameter at 4 bytes; a tied embedding counted once (lm_head reads it);
- quantized linears (`--qlinear`): packed weights (4 or 8 bits each) + one scale per group
  (bf16, as XNNPACK stores group scales) or per output channel (fp32); biases fp32;
  lm_head is a linear too (quantized even when tied: it gets its own quantized copy);
- an embedding table is not counted when it is only gathered (one row per token);
- norms and other parameters at 4 bytes.
KV-cache reads grow with the context and are left out: this is the short-context bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from executorch_optimum.benchmark.variants import Variant

CONVENTION = "copy bandwidth counts read + write bytes (STREAM Copy: 2 x buffer per copy)"
_QLINEAR_BITS = {"8da4w": 4, "8da8w": 8, "4w": 4, "8w": 8}


@dataclass(frozen=True)
class Bandwidth:
    gb_per_s: float  # copy, 1e9 bytes/s, read + write
    buffer_mib: int
    threads: int
    convention: str = CONVENTION
    read_gb_per_s: float | None = None  # sum of a buffer, 1e9 bytes read/s

    def best(self, other: Bandwidth) -> Bandwidth:
        reads = [r for r in (self.read_gb_per_s, other.read_gb_per_s) if r is not None]
        return Bandwidth(
            gb_per_s=max(self.gb_per_s, other.gb_per_s),
            buffer_mib=self.buffer_mib,
            threads=self.threads,
            convention=self.convention,
            read_gb_per_s=max(reads) if reads else None,
        )


def _best_seconds(fn, repeats: int) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_copy_bandwidth(threads: int, buffer_mib: int = 256, repeats: int = 7) -> Bandwidth:
    """Copy bandwidth (read + write bytes) and read bandwidth, best of `repeats` each."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        n = buffer_mib * 1024 * 1024 // 4
        src = torch.ones(n, dtype=torch.float32)
        dst = torch.empty_like(src)
        dst.copy_(src)  # fault in every page
        copy_s = _best_seconds(lambda: dst.copy_(src), repeats)
        read_s = _best_seconds(src.sum, repeats)
    finally:
        torch.set_num_threads(previous)
    return Bandwidth(
        gb_per_s=2 * n * 4 / copy_s / 1e9,
        buffer_mib=buffer_mib,
        threads=threads,
        read_gb_per_s=n * 4 / read_s / 1e9,
    )


def _linear_weight_bytes(weight_numel: int, out_features: int, in_features: int, variant: Variant) -> int:
    if not variant.qlinear:
        return 4 * weight_numel
    bits = _QLINEAR_BITS[variant.qlinear]
    group = variant.qlinear_group_size
    if group:
        scales = out_features * (in_features // group) * 2  # bf16 group scales
    else:
        scales = out_features * 4  # fp32 per-channel scales
    return weight_numel * bits // 8 + scales


def weight_bytes_per_token(model: torch.nn.Module, variant: Variant) -> dict[str, int]:
    """Bytes of weights one decode step reads, by kind; 'total' sums them.

    Works on a meta-device model (only shapes are read)."""
    counts = {"linear": 0, "lm_head": 0, "other": 0}
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    seen: set[int] = set()
    embeddings: list[torch.nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            if isinstance(module, torch.nn.Embedding) and name == "weight":
                embeddings.append(param)  # counted below only if a linear reads it too
                continue
            seen.add(id(param))
            if isinstance(module, torch.nn.Linear) and name == "weight":
                kind = "lm_head" if module is lm_head else "linear"
                counts[kind] += _linear_weight_bytes(
                    param.numel(), module.out_features, module.in_features, variant
                )
            else:
                counts["other"] += 4 * param.numel()
    counts["total"] = sum(counts.values())
    return counts


def bytes_per_token_for_config(config_json_dir, variant: Variant) -> dict[str, int]:  # noqa: ANN001
    """weight_bytes_per_token of a checkpoint/config directory, without allocating weights."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(config_json_dir, local_files_only=True)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return weight_bytes_per_token(model, variant)


def roofline_tokens_per_s(bandwidth: Bandwidth, bytes_per_token: int, read: bool = False) -> float:
    """Tokens/s if every decode step streamed its weights at the copy (or read) bandwidth."""
    gb_per_s = bandwidth.read_gb_per_s if read else bandwidth.gb_per_s
    if gb_per_s is None:
        return float("nan")
    return gb_per_s * 1e9 / bytes_per_token if bytes_per_token else float("inf")
