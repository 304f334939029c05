"""Prefill + decode loop over a `.pte` in the ExecuTorch runtime, with tokens/s measurements.

The program's `forward(tokens int64 [1, S], cache_position int64 [S] or [1])` returns logits
`[1, S, V]`, `[1, 1, V]` (last position only) or `[1, V]`. Like ExecuTorch's TextLLMRunner, the
position input is `arange(start, start + S)` when the method accepts more than one position and
`[start]` otherwise, prompts are fed in chunks of `get_max_seq_len` (one token at a time
without dynamic shapes), and generation stops on any of `get_eos_ids`.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from executorch_optimum.runtime.metadata import ProgramMetadata, read_metadata
from executorch_optimum.runtime.sampling import greedy_token, sample_next_token


def load_executorch_op_libraries() -> None:
    """Registers ExecuTorch's own optional kernels with the runtime in this process.

    Quantized embeddings need `quantized_decomposed::embedding_*`; ExecuTorch's custom SDPA and
    KV-cache ops need `llama::*`. Python's import cache makes this idempotent (loading a kernel
    library twice would abort the process). Our own `eo::*` kernels are loaded by
    `executorch_optimum.kernels.load_et_kernels()`, which the caller invokes when it needs them.
    """
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401


@dataclass
class GenerationStats:
    """Timings of one `generate` call, in seconds and tokens per second."""

    prompt_tokens: int
    generated_tokens: int
    prefill_s: float
    decode_s: float
    time_to_first_token_s: float
    forward_calls: int

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("inf")

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens produced by decode steps (all but the first, which prefill yields) per second."""
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else float("nan")

    def to_dict(self) -> dict[str, float]:
        return {
            **asdict(self),
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
        }

    def summary(self) -> str:
        return (
            f"prompt {self.prompt_tokens} tok, prefill {self.prefill_tokens_per_s:.1f} tok/s, "
            f"first token after {1000 * self.time_to_first_token_s:.1f} ms, "
            f"generated {self.generated_tokens} tok at {self.decode_tokens_per_s:.1f} tok/s"
        )


@dataclass
class GenerationResult:
    """Generated token ids (prompt excluded), why generation stopped, and its stats.

    `logits` holds the logits each generated token was chosen from when `record_logits=True`.
    """

    tokens: list[int]
    stop_reason: str  # "eos", "max_new_tokens" or "context_full"
    stats: GenerationStats
    logits: list[torch.Tensor] = field(default_factory=list)


class Generator:
    """Loads a `.pte` once and generates from it; not thread-safe (the method holds the cache)."""

    def __init__(
        self,
        pte: str | Path | bytes,
        method: str = "forward",
        load_op_libraries: Callable[[], None] | None = load_executorch_op_libraries,
        enable_etdump: bool = False,
    ) -> None:
        """`enable_etdump` traces every call (ExecuTorch's ETDump; see `write_etdump`)."""
        from executorch.runtime import Runtime

        if load_op_libraries is not None:
            load_op_libraries()
        source = pte if isinstance(pte, bytes) else Path(pte)
        if isinstance(source, Path) and not source.is_file():
            raise FileNotFoundError(f"no .pte at {source}")
        self.program = Runtime.get().load_program(source, enable_etdump=enable_etdump)
        if method not in self.program.method_names:
            raise ValueError(
                f"the program has no {method!r} method (it has {sorted(self.program.method_names)})"
            )
        self.metadata: ProgramMetadata = read_metadata(self.program)
        self.method_name = method
        self._method = self.program.load_method(method)
        self._used = False
        meta = self.program.metadata(method)
        self._num_inputs = meta.num_inputs()
        # Like the stock runner: a position input that holds more than one value is cache_position.
        self._positions_per_call = meta.input_tensor_meta(1).sizes()[0] if self._num_inputs > 1 else 0
        self._decode_inputs: list[torch.Tensor] | None = None
        self._decode_views: list = []
        # Everything alive now (torch, transformers, the program: ~400k objects) leaves the
        # collector's view. Python's periodic full collections walked them all during decode:
        # ~4 % of a SmolLM2 8da4w step. The collector stays on for what the caller makes later.
        gc.freeze()

    def write_etdump(self, path: str | Path) -> None:
        """Writes the trace of the calls so far (the program was loaded with `enable_etdump`)."""
        self.program.write_etdump_result_to_file(str(path), "")

    def reset(self) -> None:
        """Reloads the method: mutable buffers (KV caches) return to their initial state."""
        self._method = self.program.load_method(self.method_name)
        self._used = False

    def _inputs(self, tokens: Sequence[int], start_pos: int) -> list[torch.Tensor]:
        if len(tokens) == 1 and self._num_inputs == 2:
            return self._single_token_inputs(tokens[0], start_pos)
        ids = torch.tensor([list(tokens)], dtype=torch.long)
        if self._num_inputs == 1:
            return [ids]
        if self._positions_per_call > 1:
            return [ids, torch.arange(start_pos, start_pos + len(tokens), dtype=torch.long)]
        return [ids, torch.tensor([start_pos], dtype=torch.long)]

    def _single_token_inputs(self, token: int, position: int) -> list[torch.Tensor]:
        """A decode call's inputs, written into two tensors made once (through numpy views).

        Right after a call has streamed the weights, the caches hold none of torch's tensor
        construction code and data: two `torch.tensor` calls took ~100 us there (5 us warm), 2 %
        of a SmolLM2 8da4w step. The call has returned when the next one writes them."""
        if self._decode_inputs is None:
            self._decode_inputs = [torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long)]
            self._decode_views = [t.numpy() for t in self._decode_inputs]
        ids, positions = self._decode_views
        ids[0, 0] = token
        positions[0] = position
        return self._decode_inputs

    def forward(self, tokens: Sequence[int], start_pos: int, all_positions: bool = False) -> torch.Tensor:
        """Runs one call at positions start_pos.. and returns fresh logits: the LAST token's
        [V] by default, or every returned position's [S, V] (S is 1 for last-only programs)."""
        self._used = True
        # ExecuTorch's Method.execute already copies outputs out of the program's planned
        # memory, so the result outlives the next call without another copy.
        (logits,) = self._method.execute(self._inputs(tokens, start_pos))
        rows = logits.reshape(-1, logits.shape[-1])
        return rows if all_positions else rows[-1]

    def greedy_step(self, token: int, position: int) -> int:
        """`greedy_token(forward([token], position))` without forward's reshape and index.

        A single-token call returns one position's logits whatever their rank, so greedy_token
        takes them as they come. Right after a call has streamed the weights, the caches hold
        none of torch's code: forward's reshape and index plus the old greedy_token took ~170 us
        of a SmolLM2 8da4w step there, this ~85 us."""
        if self._num_inputs != 2:
            return greedy_token(self.forward([token], position))
        self._used = True
        (logits,) = self._method.execute(self._single_token_inputs(token, position))
        return greedy_token(logits)

    def prefill(self, prompt: Sequence[int], start_pos: int = 0) -> tuple[torch.Tensor, int]:
        """Feeds `prompt` in chunks the program accepts; returns (last logits, number of calls)."""
        if not prompt:
            raise ValueError("the prompt is empty")
        end = start_pos + len(prompt)
        if end > self.metadata.max_context_len:
            raise ValueError(
                f"prompt of {len(prompt)} tokens at position {start_pos} exceeds the context of "
                f"{self.metadata.max_context_len} tokens"
            )
        if self._num_inputs == 1:  # no KV cache: the whole sequence goes in one call
            if len(prompt) > self.metadata.max_seq_len:
                raise ValueError(
                    f"prompt exceeds {self.metadata.max_seq_len} tokens (program without a cache)"
                )
            return self.forward(prompt, 0), 1
        chunk = self.metadata.prefill_chunk
        logits, calls = None, 0
        for begin in range(0, len(prompt), chunk):
            logits = self.forward(prompt[begin : begin + chunk], start_pos + begin)
            calls += 1
        return logits, calls

    def generate(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        eos_ids: Sequence[int] | None = None,
        record_logits: bool = False,
    ) -> GenerationResult:
        """Generates up to `max_new_tokens` after `prompt` (a fresh sequence from position 0:
        a used method is reloaded first, so caches start empty).

        Stops early on an eos id (the program's `get_eos_ids` unless `eos_ids` is given; the
        eos token is included in the result) or when the context is full.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stop_ids = set(self.metadata.eos_ids if eos_ids is None else eos_ids)
        generator = torch.Generator().manual_seed(seed)
        if self._used:
            self.reset()
        history = list(prompt)

        start = time.perf_counter()
        logits, calls = self.prefill(history)
        prefill_done = time.perf_counter()
        token = sample_next_token(logits, temperature, top_p, generator)
        first_token = time.perf_counter()

        tokens, recorded = [token], [logits] if record_logits else []
        stop_reason = "max_new_tokens"
        while True:
            if token in stop_ids:
                stop_reason = "eos"
                break
            if len(tokens) >= max_new_tokens:
                break
            position = len(history) + len(tokens) - 1  # where the newest token goes
            if position >= self.metadata.max_context_len or (
                self._num_inputs == 1 and position + 1 > self.metadata.max_seq_len
            ):
                stop_reason = "context_full"
                break
            calls += 1
            if self._num_inputs == 1:
                logits = self.forward(history + tokens, 0)
            elif temperature == 0.0 and not record_logits:
                token = self.greedy_step(token, position)
                tokens.append(token)
                continue
            else:
                logits = self.forward([token], position)
            token = sample_next_token(logits, temperature, top_p, generator)
            tokens.append(token)
            if record_logits:
                recorded.append(logits)
        end = time.perf_counter()

        stats = GenerationStats(
            prompt_tokens=len(history),
            generated_tokens=len(tokens),
            prefill_s=prefill_done - start,
            decode_s=end - first_token,
            time_to_first_token_s=first_token - start,
            forward_calls=calls,
        )
        return GenerationResult(tokens=tokens, stop_reason=stop_reason, stats=stats, logits=recorded)
