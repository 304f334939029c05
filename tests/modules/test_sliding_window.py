"""Sliding-window layers on ring buffers: prompts shorter than, equal to and 3x the window,
prefilled in one call or in chunks, with generation that wraps the ring several times."""

import copy

import pytest
import torch

from executorch_optimum.caches import ETRingLayer
from executorch_optimum.modules import CausalLMExportableModule
from tests.support.parity import assert_same_run, eager_trace, program_trace
from tests.support.tiny_models import tiny_model

WINDOW = 8
DECODE_STEPS = 60


@pytest.fixture(scope="module", params=["mistral", "gemma3"])
def arch(request):
    return request.param


@pytest.mark.parametrize("prompt_len", [5, WINDOW, 3 * WINDOW], ids=["shorter", "equal", "3x"])
@pytest.mark.parametrize("max_seq_len", [3 * WINDOW, 6], ids=["one_call", "chunks_of_6"])
def test_ring_prefill_and_wrapping_decode_match_eager(arch, prompt_len, max_seq_len):
    model = tiny_model(arch, sliding_window=WINDOW)
    prompt = torch.randint(3, model.config.vocab_size, (1, prompt_len))
    want = eager_trace(model, prompt, DECODE_STEPS)

    module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=max_seq_len, max_context_len=96)
    rings = [layer for layer in module.cache.layers if isinstance(layer, ETRingLayer)]
    assert rings, "expected ring-buffer layers for a sliding-window model"
    # The ring is window + chunk - 1 slots (rounded up), far below the context...
    assert all(r.capacity <= WINDOW + max_seq_len for r in rings)
    # ...so generation laps it several times.
    assert (prompt_len + DECODE_STEPS) // rings[0].capacity >= 2

    program = module.export()["forward"]
    got = program_trace(program.module(), prompt, DECODE_STEPS, chunk=max_seq_len, forced=want.tokens)
    assert_same_run(got, want)


def test_full_layers_keep_the_whole_context():
    model = tiny_model("gemma3", sliding_window=WINDOW)
    module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=6, max_context_len=96)
    full = [layer for layer in module.cache.layers if not isinstance(layer, ETRingLayer)]
    assert len(full) == 1 and full[0].max_cache_len == 96


def test_past_the_context_is_a_clear_error():
    model = tiny_model("mistral", sliding_window=WINDOW)
    module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=4, max_context_len=16)
    with torch.no_grad():
        module(torch.ones((1, 4), dtype=torch.long), torch.arange(4))
        with pytest.raises(RuntimeError, match="context full"):
            module(torch.ones((1, 4), dtype=torch.long), torch.arange(14, 18))
