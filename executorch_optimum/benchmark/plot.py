"""PNG plot of decode tokens/s vs cache position, one line per (model, variant, exporter)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from executorch_optimum.benchmark.results import ContextSweep


def plot_context_sweeps(sweeps: Sequence[ContextSweep], title: str = "") -> bytes:
    """The PNG bytes (written by the caller, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    try:
        for sweep in sweeps:
            xs = [p.position for p in sweep.points]
            ys = [p.decode_tokens_per_s.median for p in sweep.points]
            lows = [p.decode_tokens_per_s.median - p.decode_tokens_per_s.min for p in sweep.points]
            highs = [p.decode_tokens_per_s.max - p.decode_tokens_per_s.median for p in sweep.points]
            window = f"sliding window {sweep.sliding_window}" if sweep.sliding_window else "full attention"
            label = f"{sweep.model} {sweep.variant} [{sweep.exporter}] ({window})"
            ax.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ticks = sorted({p.position for sweep in sweeps for p in sweep.points})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("tokens already in the KV cache (decode position)")
        ax.set_ylabel("decode tokens/s (median, min–max bars)")
        ax.set_title(title or "ExecuTorch decode speed vs context")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()
