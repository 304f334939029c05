"""The eager transformers baseline: same weights, same prompt, same protocol as the .pte.

fp32, the model's default attention implementation, a DynamicCache; prefill the prompt in
one call, then `new_tokens` greedy single-token calls. `torch.set_num_threads(threads)`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from executorch_optimum.benchmark.runtime_speed import RunSample, SpeedResult, describe_run


def load_eager_model(checkpoint_dir: Path) -> torch.nn.Module:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        checkpoint_dir, local_files_only=True, dtype=torch.float32
    )
    return model.eval()


@torch.inference_mode()
def eager_run(model: torch.nn.Module, prompt: Sequence[int], new_tokens: int) -> RunSample:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers renames past_key_values
        return _eager_run(model, prompt, new_tokens)


def _eager_run(model: torch.nn.Module, prompt: Sequence[int], new_tokens: int) -> RunSample:
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    t1 = time.perf_counter()
    past = out.past_key_values
    token = int(torch.argmax(out.logits[0, -1]))
    tokens = [token]
    t2 = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=torch.tensor([[token]], dtype=torch.long), past_key_values=past, use_cache=True)
        past = out.past_key_values
        token = int(torch.argmax(out.logits[0, -1]))
        tokens.append(token)
    t3 = time.perf_counter()
    return RunSample(prefill_s=t1 - t0, decode_s=t3 - t2, tokens=tokens)


def measure_eager(
    model: torch.nn.Module,
    prompt: Sequence[int],
    new_tokens: int,
    threads: int,
    repeats: int = 3,
    on_run: Callable[[str], None] | None = None,
) -> SpeedResult:
    """A warm-up run, then `repeats` timed runs; `on_run` hears about each finished run."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        samples = []
        for r in range(repeats + 1):
            sample = eager_run(model, prompt, new_tokens)
            if r:
                samples.append(sample)
            if on_run is not None:
                on_run(
                    describe_run(
                        sample, len(prompt), new_tokens, "warm-up" if r == 0 else f"run {r}/{repeats}"
                    )
                )
    finally:
        torch.set_num_threads(previous)
    return SpeedResult.from_samples(samples, len(prompt), new_tokens, len(prompt))
