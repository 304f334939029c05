"""Where a decode step's time goes: ExecuTorch's ETDump per operator, summed per step.

The program runs with event tracing on (`enable_etdump`): a prefill of `prompt_len` tokens,
then `steps` single-token calls. ExecuTorch's Inspector gives each traced event (a CPU
operator, a delegate call, and inside XNNPACK each of its operators) one time per call; their
mean over the decode calls without the slowest tenth (preempted calls), summed over events of
one kind, is that kind's time per step. A mean, not a median: the timers tick in whole
microseconds, and most of XNNPACK's small operators take less, so a median reads them as 0.
Tracing itself costs time (XNNPACK reads its per-operator timers after every call), so the
step here is slower than untraced; the shares are what to read.
"""

from __future__ import annotations

import re
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from executorch_optimum.runtime.generator import Generator
from executorch_optimum.runtime.sampling import greedy_token

STEP = "Method::execute"
_TOTALS = (STEP, "DELEGATE_CALL", "OPERATOR_CALL")
_INSTANCE = re.compile(r" #\d+$")  # XNNPACK numbers repeated operators: "... GEMM #3"


def is_cpu_operator(name: str) -> bool:
    """ExecuTorch's own operator events ("native_call_..." or a custom "ns::op"), not a
    delegate's."""
    return name.startswith("native_call_") or "::" in name


@dataclass
class OpTime:
    name: str
    calls_per_step: int
    us_per_step: float


@dataclass
class DecodeProfile:
    """Per decode step: the whole call, all delegate and all CPU-operator calls, and each kind."""

    steps: int
    first_position: int
    step_us: float
    delegate_calls_us: float
    operator_calls_us: float
    ops: list[OpTime] = field(default_factory=list)  # slowest first

    @property
    def delegate_untraced_us(self) -> float:
        """Delegate time outside every traced delegate operator: the backend's per-call work
        (XNNPACK reshapes and sets up its whole graph on each call) and operators that finish
        within the timer's tick."""
        inside = sum(op.us_per_step for op in self.ops if not is_cpu_operator(op.name))
        return self.delegate_calls_us - inside

    def breakdown(self) -> dict[str, float]:
        """Microseconds per step in groups two exporters' programs share: the whole step
        ("step"), linear GEMMs, the rest of the delegate calls (XNNPACK's per-call reshape and
        setup and its small operators, most of which finish within the timer's tick),
        attention, and the other CPU operators."""
        gemms = sum(op.us_per_step for op in self.ops if not is_cpu_operator(op.name) and "GEMM" in op.name)
        attention = sum(op.us_per_step for op in self.ops if is_cpu_operator(op.name) and "sdpa" in op.name)
        return {
            "step": self.step_us,
            "GEMMs": gemms,
            "other XNNPACK": self.delegate_calls_us - gemms,
            "attention": attention,
            "other CPU ops": self.operator_calls_us - attention,
        }

    def table(self) -> str:
        lines = [
            f"decode step (traced; {self.steps} steps from position {self.first_position}): "
            f"{self.step_us:.0f} us; delegate calls {self.delegate_calls_us:.0f} us "
            f"({self.delegate_untraced_us:.0f} us of it in no traced operator), "
            f"CPU operator calls {self.operator_calls_us:.0f} us",
            "",
            "| operator | calls/step | us/step | % of step |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {op.name} | {op.calls_per_step} | {op.us_per_step:.1f} | {100 * op.us_per_step / self.step_us:.1f} |"
            for op in self.ops
        ]
        return "\n".join(lines)


def _trimmed_mean(values: list[float]) -> float:
    kept = sorted(values)[: max(1, len(values) - len(values) // 10)]
    return statistics.fmean(kept)


def summarize(
    events: list[tuple[str, list[float]]], prefill_calls: int, first_position: int
) -> DecodeProfile:
    """Folds (event name, milliseconds per call) into a per-step profile; the first
    `prefill_calls` calls of every event are the prefill's and are left out.

    The step count is the decode calls of the whole method (`Method::execute`). An event that
    fires k times per call (one name at several sites) has k times as many samples: it counts
    as k calls per step, each at its mean time.
    """
    totals = dict.fromkeys(_TOTALS, 0.0)
    decode = [(name, raw[prefill_calls:]) for name, raw in events]
    decode = [(name, times) for name, times in decode if times]
    step_counts = [len(times) for name, times in decode if name == STEP]
    steps = step_counts[0] if step_counts else max((len(times) for _, times in decode), default=0)
    if not steps:
        raise ValueError("no decode calls were traced")
    kinds: dict[str, list[tuple[int, float]]] = {}
    for name, times in decode:
        per_call = max(1, round(len(times) / steps))
        us = 1000.0 * _trimmed_mean(times) * per_call
        if name in totals:
            totals[name] += us
        else:
            kinds.setdefault(_INSTANCE.sub("", name), []).append((per_call, us))
    ops = [OpTime(name, sum(n for n, _ in v), sum(us for _, us in v)) for name, v in kinds.items()]
    ops.sort(key=lambda op: -op.us_per_step)
    return DecodeProfile(
        steps, first_position, totals[STEP], totals["DELEGATE_CALL"], totals["OPERATOR_CALL"], ops
    )


def profile_decode(pte: str | Path, prompt_len: int = 128, steps: int = 32) -> DecodeProfile:
    """Traces a prefill of `prompt_len` tokens and `steps` greedy decode calls of `pte`."""
    return profile_decodes([pte], prompt_len, steps)[0]


def profile_decodes(ptes: list[str | Path], prompt_len: int = 128, steps: int = 32) -> list[DecodeProfile]:
    """`profile_decode` for several programs that take turns step by step, as the benchmark's
    timed runs do: a slow spell of the machine falls on all of them, not on one."""
    if prompt_len < 1 or steps < 1:
        raise ValueError(f"prompt_len and steps must be >= 1, got {prompt_len} and {steps}")
    generators = [Generator(pte, enable_etdump=True) for pte in ptes]
    for generator in generators:  # every program checked before any runs
        context = generator.metadata.max_context_len
        if prompt_len + steps > context:
            raise ValueError(
                f"prompt_len + steps = {prompt_len + steps} exceeds the context of {context} tokens"
            )
    tokens, prefill_calls = [], []
    for generator in generators:
        # A fixed prompt of ids the vocabulary has (0-2 skipped: often special tokens).
        vocab = generator.metadata.vocab_size or 100
        prompt = [i % max(1, vocab - 3) + min(3, vocab - 1) for i in range(prompt_len)]
        logits, calls = generator.prefill(prompt)
        tokens.append(greedy_token(logits))
        prefill_calls.append(calls)
    for position in range(prompt_len, prompt_len + steps):
        tokens = [g.greedy_step(token, position) for g, token in zip(generators, tokens, strict=True)]
    return [
        summarize(_forward_events(generator), calls, prompt_len)
        for generator, calls in zip(generators, prefill_calls, strict=True)
    ]


def _forward_events(generator: Generator) -> list[tuple[str, list[float]]]:
    """(event name, ms per call) of the forward method's traced calls."""
    from executorch.devtools import Inspector

    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "trace.etdp"
        generator.write_etdump(etdump)
        inspector = Inspector(etdump_path=str(etdump))
    # One block per method: the runner metadata's constant methods (read at load) make their
    # own, with nothing in them but `Method::execute`; the forward calls are the largest.
    blocks = [block for block in inspector.event_blocks if block.name == "Execute"]
    forward = max(blocks, key=lambda block: len(block.events))
    return [
        (event.name, list(event.perf_data.raw)) for event in forward.events if event.perf_data is not None
    ]
