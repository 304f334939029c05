"""A/B of .pte programs in one process, for measuring a change: paired speed ratios.

Export before and after the change, then compare the two programs here. They run with the
benchmark's protocol (runtime_speed.py) and take turns call by call, so a slow spell of the
machine falls on all of them; repeat r of each is paired with repeat r of the first program.
Half the repeats load the programs in reverse order (the later loaded ran faster).
Ratios measured this way held within a few percent where separate processes, or whole runs
in turn, moved by 10 % or more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from executorch_optimum.benchmark.compare import paired_ratios
from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.runtime_speed import (
    PteBench,
    SpeedResult,
    make_prompt,
    measure_in_both_load_orders,
)


@dataclass
class ProgramComparison:
    """Each program's speeds, in the order given; the first is the baseline of the ratios."""

    ptes: list[Path]
    speeds: list[SpeedResult]

    def table(self) -> str:
        base = self.speeds[0]
        lines = [
            "| program | prefill tok/s | decode tok/s | prefill vs first | decode vs first |",
            "|---|---|---|---|---|",
        ]
        for pte, speed in zip(self.ptes, self.speeds, strict=True):
            prefill = paired_ratios(speed.prefill_tokens_per_s, base.prefill_tokens_per_s)
            decode = paired_ratios(speed.decode_tokens_per_s, base.decode_tokens_per_s)
            lines.append(
                f"| {pte} | {speed.prefill_stat().format()} | {speed.decode_stat().format()} "
                f"| {prefill.format(3)} | {decode.format(3)} |"
            )
        return "\n".join(lines)


def compare_programs(
    ptes: Sequence[str | Path],
    prompt_len: int = 128,
    new_tokens: int = 128,
    repeats: int = 10,
    prefill_calls: int = 1,
    on_run: Callable[[str], None] | None = None,
) -> ProgramComparison:
    """Measures `ptes` (two or more) in turns; the prompt's ids fit every program's vocabulary."""
    if len(ptes) < 2:
        raise BenchmarkError(f"give at least two programs to compare, got {len(ptes)}")
    if prompt_len < 1:
        raise BenchmarkError(f"prompt_len must be >= 1, got {prompt_len}")
    paths = [Path(p) for p in ptes]
    # The prompt's length decides whether a program's context holds the run; its ids are
    # drawn once the vocabularies are known.
    benches = [PteBench(p, [0] * prompt_len, new_tokens, prefill_calls) for p in paths]
    vocab = min(b.metadata.vocab_size or 100 for b in benches)
    prompt = make_prompt(prompt_len, vocab)
    for bench in benches:
        bench.prompt = list(prompt)
    # These programs serve the first half; the reversed half loads them afresh.
    loaded = dict(enumerate(benches))
    del benches

    def loader(i: int) -> Callable[[], PteBench]:
        return lambda: loaded.pop(i) if i in loaded else PteBench(paths[i], prompt, new_tokens, prefill_calls)

    loaders = [loader(i) for i in range(len(paths))]
    return ProgramComparison(paths, measure_in_both_load_orders(loaders, repeats, on_run=on_run))
