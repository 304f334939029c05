"""ExecuTorch runtime speed of any LLM .pte: prefill and greedy decode tokens/s.

Generic over every program with `forward(tokens [1, S] int64, positions [S] (or [1]) int64)`
returning logits `[1, S, V]`, `[1, 1, V]` or `[1, V]` and the runner metadata
(`get_max_seq_len`, `get_max_context_len`): ours and optimum-executorch's alike. Loading,
inputs and logits handling are `executorch_optimum.runtime.Generator`'s; this module adds
the timed protocol:

- the prompt is fed in chunks of min(get_max_seq_len, the tokens input's bound) tokens;
- prefill tokens/s = prompt tokens / prefill time (all chunks); with `prefill_calls` > 1 the
  prompt is prefilled that many times per run from position 0 (each call rewrites the same cache
  slots, so decode starts from the same state) and the run's prefill time is their median: one
  128-token call is ~0.1 s, short enough for a shared machine's slow spells to move it by 2x;
- decode tokens/s = `new_tokens` single-token greedy forward calls / their time (the first
  new token comes from the prefill logits); each call is timed too, and 1 / the run's median
  call is its median-step decode tokens/s: one preempted call on a shared machine moves the
  first by up to 1/new_tokens of the run's time per stall, the second not at all;
- every run starts from fresh KV caches (the method is reloaded outside the timed region);
- one untimed warm-up run, then `repeats` runs; several programs are measured interleaved
  call by call: run r of every program advances together, each program making one forward
  call in turn (order alternating every round), so a slow spell of a shared machine, which
  lasts seconds, falls on all of them alike. (Interleaving whole runs instead left the
  ratios of two identical programs 10 % apart from one run to the next.)
- several programs are loaded twice (`measure_in_both_load_orders`): in the given order for
  the first half of the repeats, in reverse for the rest. Loaded second, a copy of the same
  program decoded 3-4 % faster than the first, steadily over paired repeats (Intel Xeon, 2
  threads), a bias of the load order that one order alone would book to the programs.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.stats import Stat
from executorch_optimum.runtime.sampling import greedy_token


def make_prompt(length: int, vocab_size: int, seed: int = 0) -> list[int]:
    """A fixed pseudo-random prompt of token ids (ids 0-2 are skipped: often special)."""
    low = 3 if vocab_size > 3 else 0
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(low, vocab_size, (length,), generator=generator).tolist()


@dataclass
class RunSample:
    """One timed run: prefill and decode seconds, and the greedy tokens it produced."""

    prefill_s: float
    decode_s: float
    tokens: list[int] = field(default_factory=list)
    decode_step_s: list[float] = field(default_factory=list)  # each decode call, in order


@dataclass
class SpeedResult:
    """Repeated runs of one program (or of the eager model): samples and their stats."""

    prompt_len: int
    new_tokens: int
    prefill_chunk: int
    prefill_s: list[float]
    decode_s: list[float]
    tokens: list[int] = field(default_factory=list)  # greedy tokens of the last run
    decode_median_step_s: list[float] = field(default_factory=list)  # per run (when timed)

    @property
    def prefill_tokens_per_s(self) -> list[float]:
        return [self.prompt_len / s for s in self.prefill_s]

    @property
    def decode_tokens_per_s(self) -> list[float]:
        return [self.new_tokens / s for s in self.decode_s]

    @property
    def decode_step_tokens_per_s(self) -> list[float]:
        """1 / the median single-token call, per run."""
        return [1.0 / s for s in self.decode_median_step_s]

    def prefill_stat(self) -> Stat:
        return Stat.of(self.prefill_tokens_per_s)

    def decode_stat(self) -> Stat:
        return Stat.of(self.decode_tokens_per_s)

    def decode_step_stat(self) -> Stat:
        return Stat.of(self.decode_step_tokens_per_s)

    @classmethod
    def from_samples(
        cls, samples: Sequence[RunSample], prompt_len: int, new_tokens: int, chunk: int
    ) -> SpeedResult:
        return cls(
            prompt_len=prompt_len,
            new_tokens=new_tokens,
            prefill_chunk=chunk,
            prefill_s=[s.prefill_s for s in samples],
            decode_s=[s.decode_s for s in samples],
            tokens=list(samples[-1].tokens) if samples else [],
            decode_median_step_s=[statistics.median(s.decode_step_s) for s in samples if s.decode_step_s],
        )


class PteBench:
    """One loaded .pte and a fixed prompt; `run()` is one timed prefill + decode."""

    def __init__(
        self, pte: str | Path, prompt: Sequence[int], new_tokens: int, prefill_calls: int = 1
    ) -> None:
        from executorch_optimum.runtime import Generator

        if not prompt:
            raise BenchmarkError("the prompt is empty")
        if new_tokens < 1:
            raise BenchmarkError(f"new_tokens must be >= 1, got {new_tokens}")
        if prefill_calls < 1:
            raise BenchmarkError(f"prefill_calls must be >= 1, got {prefill_calls}")
        try:
            self.generator = Generator(pte)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            raise BenchmarkError(f"cannot load {pte}: {err}") from None
        if self.generator._num_inputs != 2:
            raise BenchmarkError(
                f"{pte}: forward takes {self.generator._num_inputs} inputs, expected (tokens, positions)"
            )
        self.pte = Path(pte)
        self.metadata = self.generator.metadata
        self.prompt = list(prompt)
        self.new_tokens = new_tokens
        self.prefill_calls = prefill_calls
        tokens_bound = self.generator.program.metadata("forward").input_tensor_meta(0).sizes()[-1]
        self.chunk = max(1, min(self.metadata.max_seq_len, tokens_bound))
        needed = len(self.prompt) + new_tokens
        if needed > self.metadata.max_context_len:
            raise BenchmarkError(
                f"{self.pte.name}: prompt {len(self.prompt)} + {new_tokens} new tokens exceeds its "
                f"context of {self.metadata.max_context_len} tokens"
            )

    def _fresh(self) -> None:
        self.generator.reset()

    def _prefill(self, prompt: Sequence[int], start: int = 0) -> torch.Tensor:
        logits = None
        for begin in range(0, len(prompt), self.chunk):
            logits = self.generator.forward(prompt[begin : begin + self.chunk], start + begin)
        return logits

    def run(self) -> RunSample:
        """One timed prefill + decode."""
        calls = self.calls()
        while True:
            try:
                next(calls)
            except StopIteration as done:
                return done.value

    def calls(self) -> Generator[None, None, RunSample]:
        """`run` one forward call at a time: yields after each timed call (every prefill, then
        every decode step) and returns the RunSample, so programs can take turns."""
        self._fresh()
        prefill_s = []
        for _ in range(self.prefill_calls):
            t0 = time.perf_counter()
            logits = self._prefill(self.prompt)
            prefill_s.append(time.perf_counter() - t0)
            yield
        token = greedy_token(logits)
        tokens = [token]
        position = len(self.prompt)
        steps = []
        for _ in range(self.new_tokens):
            start = time.perf_counter()
            token = self.generator.greedy_step(token, position)
            steps.append(time.perf_counter() - start)
            tokens.append(token)
            position += 1
            yield
        return RunSample(
            prefill_s=statistics.median(prefill_s), decode_s=sum(steps), tokens=tokens, decode_step_s=steps
        )

    def decode_at(self, position: int, steps: int, warmup_prompt: int = 16) -> float:
        """Seconds of one single-token decode call with `position` tokens in the cache: the
        median over `steps` calls (robust to a preempted call on a shared machine).

        A short prefill and one untimed call (the switch from prefill to decode shapes), then
        `steps` calls at positions position .. position+steps-1: the cost of attending over
        the context without generating it (the cache slots in between hold stale values,
        which changes the numbers computed, not the work)."""
        if position + steps > self.metadata.max_context_len:
            raise BenchmarkError(
                f"{self.pte.name}: position {position} + {steps} steps exceeds the context of "
                f"{self.metadata.max_context_len}"
            )
        self._fresh()
        prefix = self.prompt[: min(warmup_prompt, len(self.prompt), position - 1)] or self.prompt[:1]
        logits = self._prefill(prefix)
        token = greedy_token(logits)
        if position > len(prefix):
            token = self.generator.greedy_step(token, position - 1)
        seconds = []
        for step in range(steps):
            start = time.perf_counter()
            token = self.generator.greedy_step(token, position + step)
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)


def describe_run(sample: RunSample, prompt_len: int, new_tokens: int, what: str) -> str:
    return f"{what}: prefill {prompt_len / sample.prefill_s:.1f} tok/s, decode {new_tokens / sample.decode_s:.1f} tok/s"


def measure_interleaved(
    benches: Sequence[PteBench],
    repeats: int,
    warmup: bool = True,
    on_run: Callable[[str], None] | None = None,
) -> list[SpeedResult]:
    """`repeats` runs of each program, interleaved; one SpeedResult per bench, in order.
    `on_run` hears about each finished run."""
    if repeats < 1:
        raise BenchmarkError(f"repeats must be >= 1, got {repeats}")

    def report(i: int, sample: RunSample, what: str) -> None:
        if on_run is not None:
            name = f"{benches[i].pte.parent.name} " if len(benches) > 1 else ""
            on_run(describe_run(sample, len(benches[i].prompt), benches[i].new_tokens, name + what))

    if warmup:
        for i, bench in enumerate(benches):
            report(i, bench.run(), "warm-up")
    samples: list[list[RunSample]] = [[] for _ in benches]
    for r in range(repeats):
        for i, sample in enumerate(run_in_turns(benches, reverse=r % 2 == 1)):
            samples[i].append(sample)
            report(i, sample, f"run {r + 1}/{repeats}")
    return [
        SpeedResult.from_samples(s, len(b.prompt), b.new_tokens, b.chunk)
        for b, s in zip(benches, samples, strict=True)
    ]


def measure_in_both_load_orders(
    loaders: Sequence[Callable[[], PteBench]],
    repeats: int,
    warmup: bool = True,
    on_run: Callable[[str], None] | None = None,
) -> list[SpeedResult]:
    """`measure_interleaved` over programs loaded by `loaders`, loaded in order for the first
    half of the repeats (the extra one of an odd count) and in reverse for the rest, each set
    released before the next loads; one SpeedResult per loader, in order, runs concatenated."""
    if repeats < 1:
        raise BenchmarkError(f"repeats must be >= 1, got {repeats}")
    forward = list(range(len(loaders)))
    halves = [(forward, repeats)]
    if len(loaders) > 1 and repeats > 1:
        halves = [(forward, repeats - repeats // 2), (forward[::-1], repeats // 2)]
    parts: list[list[SpeedResult]] = [[] for _ in loaders]
    for order, count in halves:
        benches = [loaders[i]() for i in order]
        for i, speed in zip(order, measure_interleaved(benches, count, warmup, on_run), strict=True):
            parts[i].append(speed)
        del benches
        gc.collect()
    return [_concatenated(p) for p in parts]


def _concatenated(parts: Sequence[SpeedResult]) -> SpeedResult:
    first = parts[0]
    return SpeedResult(
        prompt_len=first.prompt_len,
        new_tokens=first.new_tokens,
        prefill_chunk=first.prefill_chunk,
        prefill_s=[s for p in parts for s in p.prefill_s],
        decode_s=[s for p in parts for s in p.decode_s],
        tokens=parts[-1].tokens,
        decode_median_step_s=[s for p in parts for s in p.decode_median_step_s],
    )


def run_in_turns(benches: Sequence[PteBench], reverse: bool = False) -> list[RunSample]:
    """One run of every bench, the benches taking turns call by call (the order of a round
    flips every round and starts reversed with `reverse`); one RunSample per bench, in order."""
    calls = {i: bench.calls() for i, bench in enumerate(benches)}
    samples: dict[int, RunSample] = {}
    order = list(calls)[::-1] if reverse else list(calls)
    while calls:
        for i in order:
            if i not in calls:
                continue
            try:
                next(calls[i])
            except StopIteration as done:
                samples[i] = done.value
                del calls[i]
        order.reverse()
    return [samples[i] for i in range(len(benches))]


def measure_pte(
    pte: str | Path,
    prompt: Sequence[int],
    new_tokens: int,
    repeats: int = 3,
    warmup: bool = True,
    prefill_calls: int = 1,
) -> SpeedResult:
    """The runtime speed of one program (see the module docstring for the protocol)."""
    return measure_interleaved([PteBench(pte, prompt, new_tokens, prefill_calls)], repeats, warmup)[0]


def context_positions(
    max_context_len: int, steps: int, grid: Sequence[int] = (128, 512, 1024, 2048)
) -> list[int]:
    """The grid clipped to what the context allows (position + steps <= max_context_len)."""
    top = max_context_len - steps
    if top < 1:
        return []
    return sorted({min(p, top) for p in grid if p >= 1})


def measure_context_sweep(
    benches: Sequence[PteBench], positions: Sequence[int], steps: int = 16, repeats: int = 3
) -> list[dict[int, Stat]]:
    """Decode tokens/s at each cache position, per bench (interleaved like the speed runs)."""
    results: list[dict[int, list[float]]] = [{p: [] for p in positions} for _ in benches]
    for bench in benches:  # warm-up
        bench.decode_at(positions[0], 1)
    for r in range(repeats):
        for position in positions:
            order = range(len(benches)) if r % 2 == 0 else reversed(range(len(benches)))
            for i in order:
                results[i][position].append(1.0 / benches[i].decode_at(position, steps))
    return [{p: Stat.of(v) for p, v in per.items()} for per in results]
