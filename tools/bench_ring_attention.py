"""Benchmark: sliding-window attention on ExecuTorch's ring + masked custom_sdpa vs our ring kernels.

Two variants of one sliding-window attention layer, each exported to its own `.pte` and run in
the ExecuTorch runtime (where a model would run them):

- `et`: ExecuTorch's CustomRingKVCache (`llama::update_cache_with_indices`), a float mask
  [S, C] built in the graph from the per-slot positions, and `llama::custom_sdpa` with that
  mask: the ops `ETRingLayer` + our attention function issue for `native_kernels=False`;
- `eo`: our `eo::ring_update_cache` + `eo::ring_sdpa` (exact-size ring, no mask): what
  `EORingLayer` issues for `native_kernels=True`.

Both layers are the library's own classes, driven through the library's attention function, so
the graphs are the ones a model export produces for a sliding layer (projections excluded).
For each window and context it times one decode step (S=1 at the last position of the context)
and one prefill chunk (S=chunk ending there), after writing every earlier position in chunks
(the ring has wrapped whenever the context exceeds the ring). Repetitions interleave the
variants (alternating which goes first) and report min / median. Each variant's output is
checked against a float64 reference of the window semantics.

Then a small Gemma 3-shaped model (random weights, fixed seed) is exported both ways
(`native_kernels` False / True) and both `Generator`s run interleaved in this process:
decode (and prefill) tokens/s, and whether their greedy tokens agree.

    ./bazelw run //tools:bench_ring_attention -- --quick
    ./bazelw run //tools:bench_ring_attention -- --threads 2 --json bench.json

Timings on a shared machine drift between runs; compare the two variants within one run.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

VARIANTS = ("et", "eo")
VARIANT_LABELS = {
    "et": "ExecuTorch ring + mask + custom_sdpa",
    "eo": "eo::ring_update_cache + eo::ring_sdpa",
}


# --------------------------------------------------------------------------------------------
# One sliding-window attention layer as an exportable module


class OneLayerAttention(torch.nn.Module):
    """One sliding layer's cache update + attention, as the library's caches/attention do it.

    forward(query [1, Hq, S, D], key/value [1, Hkv, S, D], cache_position [S]) -> [1, S, Hq, D]
    (Hugging Face's layout in, the attention function's layout out).
    """

    def __init__(
        self, native: bool, window: int, chunk: int, q_heads: int, kv_heads: int, head_dim: int
    ) -> None:
        super().__init__()
        from executorch_optimum.caches import CallPositions, EORingLayer, ETCacheBase, ETRingLayer
        from executorch_optimum.sdpa import make_attention

        positions = CallPositions()
        layer_class = EORingLayer if native else ETRingLayer
        layer = layer_class(positions, 1, window, chunk, kv_heads, head_dim, torch.float32)
        self.storage = layer.storage  # registers the cache buffers on this module
        self.cache = ETCacheBase([layer], positions, layer.capacity)
        self.attention = make_attention(self.cache, use_custom_sdpa=True, native_kernels=native)
        self.layer_idx = 0
        self.window = window
        self.chunk = chunk
        self.scale = head_dim**-0.5
        self.capacity = layer.capacity
        self.shape = (q_heads, kv_heads, head_dim)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cache_position: torch.Tensor
    ) -> torch.Tensor:
        self.cache.set_cache_position(cache_position)
        k_cache, v_cache = self.cache.get_layer_cache(0).update(key, value)
        out, _ = self.attention(
            self, query, k_cache, v_cache, None, scaling=self.scale, sliding_window=self.window
        )
        return out

    # The lowering's ExportableModule protocol.
    def export(self) -> dict[str, torch.export.ExportedProgram]:
        seq = torch.export.Dim("seq_len", min=1, max=self.chunk)
        q_heads, kv_heads, head_dim = self.shape
        example = (
            torch.zeros(1, q_heads, 2, head_dim),
            torch.zeros(1, kv_heads, 2, head_dim),
            torch.zeros(1, kv_heads, 2, head_dim),
            torch.arange(2, dtype=torch.long),
        )
        dynamic = {"query": {2: seq}, "key": {2: seq}, "value": {2: seq}, "cache_position": {0: seq}}
        with torch.no_grad():
            program = torch.export.export(self, example, dynamic_shapes=dynamic, strict=False)
        return {"forward": program}

    def metadata(self) -> dict[str, int]:
        return {}


def build_attention_pte(
    native: bool, window: int, chunk: int, q_heads: int, kv_heads: int, head_dim: int
) -> tuple[bytes, int]:
    """The `.pte` of one sliding layer (XNNPACK lowering, as the exporter does) and its ring size."""
    from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack

    module = OneLayerAttention(native, window, chunk, q_heads, kv_heads, head_dim)
    return export_to_executorch_with_xnnpack(module).buffer, module.capacity


# --------------------------------------------------------------------------------------------
# Runtime helpers


def load_runtime_kernels() -> None:
    """Our ExecuTorch kernels first, then ExecuTorch's llama::* and quantized ones (once each)."""
    from executorch_optimum import kernels
    from executorch_optimum.runtime.generator import load_executorch_op_libraries

    kernels.load_et_kernels()
    load_executorch_op_libraries()


def set_threads(threads: int) -> int:
    """Sets PyTorch's and ExecuTorch's thread counts; returns ExecuTorch's (or -1 if unknown)."""
    torch.set_num_threads(threads)
    from executorch.extension.pybindings import portable_lib

    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    if reset is not None:
        reset(threads)
    count = getattr(portable_lib, "_threadpool_get_thread_count", None)
    return int(count()) if count is not None else -1


@dataclass
class Samples:
    """Wall times of repeated calls, in milliseconds."""

    ms: list[float] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.ms)

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    def to_dict(self) -> dict[str, Any]:
        return {"min_ms": self.min, "median_ms": self.median, "samples_ms": self.ms}


def interleaved(calls: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, Samples]:
    """Times each call `repeats` times, variants interleaved, first one alternating."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    out = {name: Samples() for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            calls[name]()
            out[name].ms.append(1000 * (time.perf_counter() - start))
    return out


# --------------------------------------------------------------------------------------------
# Attention micro-benchmark


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, window: int, scale: float
) -> torch.Tensor:
    """float64 sliding-window attention of q [S, Hq, D] at positions start.. over full-history
    k, v [end, Hkv, D] (position = row): query p sees keys p - window < q <= p. -> [S, Hq, D]."""
    seq, q_heads, _ = q.shape
    end = start + seq
    first = max(0, end - seq - window + 1)
    keys = k[first:end].double()
    values = v[first:end].double()
    groups = q_heads // k.shape[1]
    keys = keys.repeat_interleave(groups, dim=1)
    values = values.repeat_interleave(groups, dim=1)
    scores = torch.einsum("shd,khd->hsk", q.double(), keys) * scale
    qpos = torch.arange(start, end).view(-1, 1)
    kpos = torch.arange(first, end).view(1, -1)
    visible = (kpos <= qpos) & (qpos - kpos < window)
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hsk,khd->shd", torch.softmax(scores, dim=-1), values)


@dataclass
class AttentionCase:
    window: int
    context: int
    phase: str  # "decode" or "prefill"
    seq_len: int
    start: int
    ring: dict[str, int]
    wrapped: dict[str, bool]
    times: dict[str, Samples]
    max_abs_err: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "context": self.context,
            "phase": self.phase,
            "seq_len": self.seq_len,
            "start_pos": self.start,
            "ring_slots": self.ring,
            "ring_wrapped": self.wrapped,
            "max_abs_err_vs_float64": self.max_abs_err,
            **{f"{name}": s.to_dict() for name, s in self.times.items()},
        }


def _execute(
    method: Any, call_inputs: list[torch.Tensor], outputs: dict[str, torch.Tensor], name: str
) -> None:
    (outputs[name],) = method.execute(call_inputs)


def bench_attention(args: argparse.Namespace, log: Callable[[str], None]) -> list[AttentionCase]:
    from executorch.runtime import Runtime

    q_heads, kv_heads, head_dim, chunk = args.heads, args.kv_heads, args.head_dim, args.chunk
    scale = head_dim**-0.5
    max_context = max(args.contexts)
    gen = torch.Generator().manual_seed(0)
    # One row per absolute position: a rewritten position always gets the same data, so
    # re-running a call (a timing repetition) leaves the ring exactly as before.
    table_q = torch.randn(max_context, q_heads, head_dim, generator=gen)
    table_k = torch.randn(max_context, kv_heads, head_dim, generator=gen)
    table_v = torch.randn(max_context, kv_heads, head_dim, generator=gen)

    def inputs(start: int, seq: int) -> list[torch.Tensor]:
        rows = slice(start, start + seq)
        return [
            table_q[rows].permute(1, 0, 2).unsqueeze(0).contiguous(),
            table_k[rows].permute(1, 0, 2).unsqueeze(0).contiguous(),
            table_v[rows].permute(1, 0, 2).unsqueeze(0).contiguous(),
            torch.arange(start, start + seq, dtype=torch.long),
        ]

    runtime = Runtime.get()
    cases: list[AttentionCase] = []
    for window in args.windows:
        programs, rings = {}, {}
        for name in VARIANTS:
            begin = time.perf_counter()
            buffer, rings[name] = build_attention_pte(
                name == "eo", window, chunk, q_heads, kv_heads, head_dim
            )
            programs[name] = runtime.load_program(buffer)
            log(
                f"  exported {name} layer, window {window}: ring {rings[name]} slots, "
                f"{len(buffer) / 1024:.0f} KiB, {time.perf_counter() - begin:.1f} s"
            )
        methods = {name: programs[name].load_method("forward") for name in VARIANTS}
        written = 0  # positions [0, written) are in both rings
        for context in sorted(args.contexts):
            for phase, seq in (("prefill", chunk), ("decode", 1)):
                start = context - seq
                # Write every position before `start` in order, in chunks (both variants).
                while written < start:
                    n = min(chunk, start - written)
                    for name in VARIANTS:
                        methods[name].execute(inputs(written, n))
                    written += n
                call_inputs = inputs(start, seq)
                outputs: dict[str, torch.Tensor] = {}

                times = interleaved(
                    {
                        name: functools.partial(_execute, methods[name], call_inputs, outputs, name)
                        for name in VARIANTS
                    },
                    args.repeats if phase == "decode" else args.prefill_repeats,
                    warmup=2,
                )
                # The decode step after the prefill chunk rewrites position context - 1 with the
                # same data: both rings still hold exactly the positions before `context`.
                written = max(written, context)
                ref = reference_attention(table_q[start:context], table_k, table_v, start, window, scale)
                errors = {
                    name: float((outputs[name].reshape(ref.shape).double() - ref).abs().max())
                    for name in VARIANTS
                }
                case = AttentionCase(
                    window=window,
                    context=context,
                    phase=phase,
                    seq_len=seq,
                    start=start,
                    ring=rings,
                    wrapped={name: context > rings[name] for name in VARIANTS},
                    times=times,
                    max_abs_err=errors,
                )
                cases.append(case)
                log(
                    f"  window {window:>5} context {context:>5} {phase:>7} S={seq:<4}"
                    + "".join(f" {n}: {times[n].median:8.3f} ms (err {errors[n]:.1e})" for n in VARIANTS)
                )
    return cases


# --------------------------------------------------------------------------------------------
# End-to-end decode of a small Gemma 3-shaped model


@dataclass
class EndToEnd:
    config: dict[str, Any]
    prompt_tokens: int
    new_tokens: int
    decode_tok_s: dict[str, list[float]]
    prefill_tok_s: dict[str, list[float]]
    pte_kib: dict[str, float]
    tokens_agree: bool
    first_divergence: int | None

    def to_dict(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, Any]:
            return {"max": max(values), "median": statistics.median(values), "samples": values}

        return {
            "config": self.config,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "pte_kib": self.pte_kib,
            "greedy_tokens_agree": self.tokens_agree,
            "first_divergence": self.first_divergence,
            "decode_tokens_per_s": {n: stats(v) for n, v in self.decode_tok_s.items()},
            "prefill_tokens_per_s": {n: stats(v) for n, v in self.prefill_tok_s.items()},
        }


def bench_end_to_end(args: argparse.Namespace, log: Callable[[str], None]) -> EndToEnd:
    import transformers

    from executorch_optimum.modules import CausalLMExportableModule
    from executorch_optimum.runtime import Generator
    from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack

    config_kwargs: dict[str, Any] = {
        "vocab_size": 4096,
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": args.e2e_layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "head_dim": args.head_dim,
        "sliding_window": args.e2e_window,
        # Gemma 3's 5 sliding : 1 full, and the last layer full.
        "layer_types": [
            "full_attention" if (i + 1) % 6 == 0 or i == args.e2e_layers - 1 else "sliding_attention"
            for i in range(args.e2e_layers)
        ],
        "max_position_embeddings": max(args.e2e_context, 2048),
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 1,
    }
    generators: dict[str, Generator] = {}
    sizes: dict[str, float] = {}
    for name in VARIANTS:
        torch.manual_seed(0)
        model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**config_kwargs)).eval()
        begin = time.perf_counter()
        module = CausalLMExportableModule(
            model, max_seq_len=args.chunk, max_context_len=args.e2e_context, native_kernels=name == "eo"
        )
        lowered = export_to_executorch_with_xnnpack(module)
        buffer = lowered.buffer
        sizes[name] = len(buffer) / 1024
        log(f"  lowering timings ({name}): " + ", ".join(f"{k} {v:.1f}" for k, v in lowered.timings.items()))
        generators[name] = Generator(buffer, load_op_libraries=load_runtime_kernels)
        log(
            f"  exported Gemma 3-shaped model ({name}): {sizes[name]:.0f} KiB, {time.perf_counter() - begin:.1f} s"
        )

    prompt_len = args.e2e_prompt
    new_tokens = min(args.e2e_new_tokens, args.e2e_context - prompt_len)
    prompt = torch.randint(
        3, config_kwargs["vocab_size"], (prompt_len,), generator=torch.Generator().manual_seed(1)
    )
    prompt_ids = prompt.tolist()
    decode: dict[str, list[float]] = {n: [] for n in VARIANTS}
    prefill: dict[str, list[float]] = {n: [] for n in VARIANTS}
    tokens: dict[str, list[int]] = {}
    for rep in range(args.e2e_repeats):
        for name in VARIANTS if rep % 2 == 0 else VARIANTS[::-1]:
            result = generators[name].generate(prompt_ids, new_tokens, eos_ids=[])
            decode[name].append(result.stats.decode_tokens_per_s)
            prefill[name].append(result.stats.prefill_tokens_per_s)
            tokens.setdefault(name, result.tokens)
            log(f"  rep {rep} {name}: {result.stats.summary()}")
    a, b = tokens["et"], tokens["eo"]
    divergence = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    if divergence is None and len(a) != len(b):
        divergence = min(len(a), len(b))
    shown = {
        k: v for k, v in config_kwargs.items() if k not in ("pad_token_id", "bos_token_id", "eos_token_id")
    }
    return EndToEnd(
        config=shown | {"max_context_len": args.e2e_context, "max_seq_len": args.chunk},
        prompt_tokens=prompt_len,
        new_tokens=new_tokens,
        decode_tok_s=decode,
        prefill_tok_s=prefill,
        pte_kib=sizes,
        tokens_agree=divergence is None,
        first_divergence=divergence,
    )


# --------------------------------------------------------------------------------------------
# Report


def _ratio(et: float, eo: float) -> str:
    return f"{et / eo:.2f}x" if eo > 0 else "n/a"


def markdown(
    cases: Sequence[AttentionCase], e2e: EndToEnd | None, env: dict[str, Any], args: argparse.Namespace
) -> str:
    lines = [
        "### Sliding-window attention, one layer, ExecuTorch runtime",
        "",
        f"Hq={args.heads}, Hkv={args.kv_heads}, D={args.head_dim}, chunk={args.chunk}, "
        f"threads={env['threads']} (ET threadpool {env['et_threadpool_threads']}), "
        f"repeats decode {args.repeats} / prefill {args.prefill_repeats}, interleaved. "
        "Times in ms, min / median. et = `update_cache_with_indices` + mask + `custom_sdpa`; "
        "eo = `eo::ring_update_cache` + `eo::ring_sdpa`. speedup = et median / eo median.",
        "",
        "| window | context | call | ring slots et / eo | et min / med (ms) | eo min / med (ms) "
        "| speedup | max abs err et / eo |",
        "|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for c in cases:
        wrapped = " (wrapped)" if c.wrapped["eo"] else ""
        lines.append(
            f"| {c.window} | {c.context} | {c.phase} S={c.seq_len} @{c.start} "
            f"| {c.ring['et']} / {c.ring['eo']}{wrapped} "
            f"| {c.times['et'].min:.3f} / {c.times['et'].median:.3f} "
            f"| {c.times['eo'].min:.3f} / {c.times['eo'].median:.3f} "
            f"| {_ratio(c.times['et'].median, c.times['eo'].median)} "
            f"| {c.max_abs_err['et']:.1e} / {c.max_abs_err['eo']:.1e} |"
        )
    if e2e is not None:
        cfg = e2e.config
        lines += [
            "",
            "### End to end: Gemma 3-shaped model (random weights, seed 0), `Generator`, interleaved",
            "",
            f"hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers "
            f"({cfg['layer_types'].count('sliding_attention')} sliding, "
            f"{cfg['layer_types'].count('full_attention')} full), "
            f"window {cfg['sliding_window']}, vocab {cfg['vocab_size']}, Hq={cfg['num_attention_heads']}, "
            f"Hkv={cfg['num_key_value_heads']}, D={cfg['head_dim']}, context {cfg['max_context_len']}, "
            f"chunk {cfg['max_seq_len']}; prompt {e2e.prompt_tokens} tokens, {e2e.new_tokens} new tokens "
            f"(greedy), {len(e2e.decode_tok_s['et'])} runs each. Greedy tokens et vs eo: "
            + ("identical." if e2e.tokens_agree else f"differ from token {e2e.first_divergence}."),
            "",
            "| native_kernels | .pte KiB | decode tok/s best / median | prefill tok/s best / median |",
            "|---|---:|---:|---:|",
        ]
        for name, flag in (("et", "False (et)"), ("eo", "True (eo)")):
            d, p = e2e.decode_tok_s[name], e2e.prefill_tok_s[name]
            lines.append(
                f"| {flag} | {e2e.pte_kib[name]:.0f} | {max(d):.1f} / {statistics.median(d):.1f} "
                f"| {max(p):.1f} / {statistics.median(p):.1f} |"
            )
        ratio = statistics.median(e2e.decode_tok_s["eo"]) / statistics.median(e2e.decode_tok_s["et"])
        lines += ["", f"Decode speedup (eo / et, medians): {ratio:.2f}x"]
    lines += [
        "",
        f"Machine: {env['machine']}, {env['cpus']} CPUs, load average at start {env['loadavg_start']}, "
        f"at end {env['loadavg_end']}; torch {env['torch']}, executorch {env['executorch']}.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bazel run //tools:bench_ring_attention --", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch and ExecuTorch threads"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed decode calls per variant (default 30, quick 10)"
    )
    parser.add_argument("--prefill_repeats", type=int, default=None, help="timed prefill chunks per variant")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (< 2 minutes)")
    parser.add_argument("--json", type=Path, default=None, help="also write every sample here")
    parser.add_argument("--windows", type=int, nargs="+", default=None, help="default 512 4096 (quick 512)")
    parser.add_argument(
        "--contexts", type=int, nargs="+", default=None, help="default 1024 8192 (quick 1024)"
    )
    parser.add_argument("--heads", type=int, default=4, help="query heads")
    parser.add_argument(
        "--kv_heads", type=int, default=1, help="key/value heads; divides --heads (default 1)"
    )
    parser.add_argument("--head_dim", type=int, default=256, help="floats per head (default 256)")
    parser.add_argument("--chunk", type=int, default=128, help="prefill chunk (max_seq_len)")
    parser.add_argument("--skip_e2e", action="store_true", help="attention micro-benchmark only")
    parser.add_argument(
        "--e2e_window", type=int, default=512, help="sliding window of the end-to-end model (default 512)"
    )
    parser.add_argument("--e2e_layers", type=int, default=None, help="default 6 (quick 2)")
    parser.add_argument("--e2e_context", type=int, default=None, help="default 2048 (quick 1024)")
    parser.add_argument("--e2e_prompt", type=int, default=None, help="default 1536 (quick 640)")
    parser.add_argument("--e2e_new_tokens", type=int, default=None, help="default 64 (quick 24)")
    parser.add_argument("--e2e_repeats", type=int, default=None, help="default 4 (quick 2)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "repeats": 10 if quick else 30,
        "prefill_repeats": 4 if quick else 10,
        "windows": [512] if quick else [512, 4096],
        "contexts": [1024] if quick else [1024, 8192],
        "e2e_layers": 2 if quick else 6,
        "e2e_context": 1024 if quick else 2048,
        "e2e_prompt": 640 if quick else 1536,
        "e2e_new_tokens": 24 if quick else 64,
        "e2e_repeats": 2 if quick else 4,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.heads % args.kv_heads:
        parser.error("--heads must be a multiple of --kv_heads")
    if min(args.contexts) < args.chunk:
        parser.error("every context must hold at least one chunk")
    if args.e2e_prompt >= args.e2e_context:
        parser.error("--e2e_prompt must be shorter than --e2e_context")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    load_runtime_kernels()
    et_threads = set_threads(args.threads)
    env: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "et_threadpool_threads": et_threads,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "torch": torch.__version__,
        "executorch": importlib.metadata.version("executorch"),
        "kernels_simd": os.environ.get("EO_KERNELS_SIMD", "widest"),
    }
    begin = time.perf_counter()
    log(f"attention micro-benchmark (windows {args.windows}, contexts {args.contexts})")
    cases = bench_attention(args, log)
    e2e = None
    if not args.skip_e2e:
        log("end-to-end Gemma 3-shaped model")
        e2e = bench_end_to_end(args, log)
    env["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    env["wall_s"] = round(time.perf_counter() - begin, 1)
    table = markdown(cases, e2e, env, args)
    print(table)
    if args.json is not None:
        report = {
            "env": env,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "attention": [c.to_dict() for c in cases],
            "end_to_end": e2e.to_dict() if e2e is not None else None,
            "markdown": table,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    bad = [
        c for c in cases for n in VARIANTS if not math.isfinite(c.max_abs_err[n]) or c.max_abs_err[n] > 1e-3
    ]
    if bad:
        log(f"WARNING: {len(bad)} case(s) differ from the float64 reference by more than 1e-3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
