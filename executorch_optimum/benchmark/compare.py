"""ours / theirs ratios between two exporters' rows of the same model and variant.

Runtime metrics pair the interleaved repeats (repeat i of one with repeat i of the other)
and report min / median / max of the per-repeat ratios; export metrics are single values.
"""

from __future__ import annotations

from collections.abc import Sequence

from executorch_optimum.benchmark.results import Ratio, RatioRow, Row
from executorch_optimum.benchmark.stats import Stat

# (metric, how to read it from a row, higher is better)
_EXPORT_METRICS = (
    ("export wall s", lambda r: r.export.wall_s, False),
    ("export CPU s", lambda r: r.export.cpu_s, False),
    ("export peak RSS", lambda r: r.export.peak_rss_bytes, False),
    (".pte size", lambda r: r.export.pte_bytes, False),
)
_RUNTIME_METRICS = (
    ("prefill tok/s", lambda r: r.prefill_tokens_per_s, True),
    ("decode tok/s", lambda r: r.decode_tokens_per_s, True),
    ("decode tok/s (median step)", lambda r: r.decode_step_tokens_per_s, True),
)


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> Stat:
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError(f"cannot pair {len(numerator)} and {len(denominator)} repeats")
    return Stat.of([a / b for a, b in zip(numerator, denominator, strict=True)])


def ratio_row(ours: Row, theirs: Row) -> RatioRow:
    if (ours.model, ours.variant) != (theirs.model, theirs.variant):
        raise ValueError(f"comparing {ours.model}/{ours.variant} with {theirs.model}/{theirs.variant}")
    ratios = [
        Ratio(name, Stat.of([get(ours) / get(theirs)]), better) for name, get, better in _EXPORT_METRICS
    ]
    ratios += [
        Ratio(name, paired_ratios(get(ours), get(theirs)), better)
        for name, get, better in _RUNTIME_METRICS
        if get(ours) and get(theirs)  # rows from before per-step timing have no median steps
    ]
    return RatioRow(ours.model, ours.variant, ours.exporter, theirs.exporter, ratios)


def ratio_rows(rows: Sequence[Row], numerator: str, denominator: str) -> list[RatioRow]:
    """A RatioRow for every (model, variant) that both exporters have a row for."""
    theirs = {(r.model, r.variant): r for r in rows if r.exporter == denominator}
    return [
        ratio_row(r, theirs[(r.model, r.variant)])
        for r in rows
        if r.exporter == numerator and (r.model, r.variant) in theirs
    ]
