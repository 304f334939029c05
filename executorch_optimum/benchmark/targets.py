"""The project's targets against the incumbent exporter, and how far a run is from each.

A target bounds the median ratio ours / theirs of one metric (the comparison's paired
ratios), or, for fp32 decode, our speed as a fraction of the copy-bandwidth roofline. The
decode check notes both exporters' decode, and the target's, as a fraction of the
read-bandwidth roofline (when the two are close, both read the same weight bytes at the same
speed and the gap is bytes, not overhead; a target near or past 100 % leaves no time beside the
weights' read) and, when the run traced them, where each one's decode step goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # results renders the checks, so it imports this module
    from executorch_optimum.benchmark.results import BenchmarkResults, RatioRow, Row

ROOFLINE_METRIC = "fp32 decode / copy roofline"


@dataclass(frozen=True)
class Target:
    metric: str  # a comparison metric, or ROOFLINE_METRIC
    bound: float
    higher_is_better: bool
    variants: tuple[str, ...] = ()  # the variants it applies to (empty: all)

    def applies_to(self, variant: str) -> bool:
        return not self.variants or variant in self.variants

    def describe(self) -> str:
        if self.metric == ROOFLINE_METRIC:
            return f">= {self.bound:.0%}"
        return f"{'>=' if self.higher_is_better else '<='} {self.bound:g}"


TARGETS = (
    Target("decode tok/s", 1.5, True),
    Target("prefill tok/s", 1.3, True),
    Target("export CPU s", 0.5, False),
    Target("export peak RSS", 0.7, False),
    Target(".pte size", 0.85, False, ("fp32",)),
    Target(ROOFLINE_METRIC, 0.6, True, ("fp32",)),
)


@dataclass(frozen=True)
class TargetCheck:
    model: str
    variant: str
    exporter: str
    target: Target
    value: float
    note: str = ""

    @property
    def met(self) -> bool:
        if self.target.higher_is_better:
            return self.value >= self.target.bound
        return self.value <= self.target.bound

    @property
    def shortfall(self) -> float:
        """The factor the value still has to improve by (1.0 once met)."""
        if self.met:
            return 1.0
        if self.target.higher_is_better:
            return self.target.bound / self.value
        return self.value / self.target.bound

    def format_value(self) -> str:
        return f"{self.value:.0%}" if self.target.metric == ROOFLINE_METRIC else f"{self.value:.2f}"


def _profile_text(row: Row) -> str:
    """The row's traced decode step as its length and shares: `7124 us: GEMMs 41%, ...`."""
    step = row.decode_profile_us.get("step", 0.0)
    parts = [(k, v) for k, v in row.decode_profile_us.items() if k != "step"]
    return f"{step:.0f} us: " + ", ".join(f"{k} {v / step:.0%}" for k, v in parts)


def _roofline_text(ours: float, theirs: float, exporter: str, bound: float) -> str:
    """Both exporters and the target itself as fractions of the read-bandwidth roofline.

    The target's fraction says how much of its step the weights' read alone would take; past
    100 % no program reading those bytes can meet it.
    """
    goal = bound * theirs
    past = " (past the measured bandwidth)" if goal > 1.0 else ""
    return (
        f"read-bandwidth roofline: ours at {ours:.0%}, {exporter} at {theirs:.0%}, "
        f"{bound:g}x {exporter} at {goal:.0%}{past}"
    )


def _decode_note(ours: Row, theirs: Row | None, bound: float) -> str:
    if theirs is None:
        return ""
    notes = []
    if ours.decode_vs_read_roofline is not None and theirs.decode_vs_read_roofline is not None:
        notes.append(
            _roofline_text(
                ours.decode_vs_read_roofline, theirs.decode_vs_read_roofline, theirs.exporter, bound
            )
        )
    if ours.decode_profile_us.get("step") and theirs.decode_profile_us.get("step"):
        notes.append(f"traced step: ours {_profile_text(ours)}; {theirs.exporter} {_profile_text(theirs)}")
    return "; ".join(notes)


def check_targets(results: BenchmarkResults, targets: tuple[Target, ...] = TARGETS) -> list[TargetCheck]:
    """One check per (compared model and variant, applicable target), in the comparison's order."""
    rows = {(r.model, r.variant, r.exporter): r for r in results.rows}
    checks = []
    for ratio_row in results.ratios:
        ours = rows.get((ratio_row.model, ratio_row.variant, ratio_row.numerator))
        theirs = rows.get((ratio_row.model, ratio_row.variant, ratio_row.denominator))
        for target in targets:
            if not target.applies_to(ratio_row.variant):
                continue
            check = _check(target, ratio_row, ours, theirs)
            if check is not None:
                checks.append(check)
    return checks


def _check(target: Target, ratio_row: RatioRow, ours: Row | None, theirs: Row | None) -> TargetCheck | None:
    where = (ratio_row.model, ratio_row.variant, ratio_row.numerator)
    if target.metric == ROOFLINE_METRIC:
        return None if ours is None else TargetCheck(*where, target, ours.decode_vs_roofline)
    ratio = next((r for r in ratio_row.ratios if r.metric == target.metric), None)
    if ratio is None:
        return None
    note = ""
    if target.metric == "decode tok/s" and ours is not None:
        note = _decode_note(ours, theirs, target.bound)
    return TargetCheck(*where, target, ratio.stat.median, note)
