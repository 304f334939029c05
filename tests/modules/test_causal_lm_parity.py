"""Exported decoder-only programs compute what the eager transformers model computes."""

import copy

import pytest
import torch

from executorch_optimum.modules import CausalLMExportableModule
from tests.support.parity import assert_same_run, eager_trace, program_trace
from tests.support.tiny_models import TINY_CONFIGS, tiny_model

DECODE_STEPS = 32


def _export(model, **kwargs):
    module = CausalLMExportableModule(copy.deepcopy(model), **kwargs)
    return module, module.export()["forward"]


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_exported_program_matches_eager(arch):
    model = tiny_model(arch)
    prompt = torch.randint(3, model.config.vocab_size, (1, 12))
    want = eager_trace(model, prompt, DECODE_STEPS)

    _, program = _export(model, max_seq_len=16, max_context_len=64)
    got = program_trace(program.module(), prompt, DECODE_STEPS, chunk=16, forced=want.tokens)
    assert_same_run(got, want)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_graph_has_custom_ops_and_no_window_cap(arch):
    model = tiny_model(arch)
    _, program = _export(model, max_seq_len=32, max_context_len=64)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    layers = model.config.num_hidden_layers
    assert targets.count("llama.custom_sdpa.default") == layers
    updates = targets.count("llama.update_cache.default") + targets.count(
        "llama.update_cache_with_indices.default"
    )
    assert updates == 2 * layers
    # The sequence dimension keeps its full range: no guard capped it at a window.
    seq_ranges = [r for r in program.range_constraints.values() if r.lower == 1]
    assert seq_ranges and all(r.upper == 32 for r in seq_ranges), program.range_constraints
    # The update ops write straight into the cache buffers (in place, no copy in between).
    buffers = program.graph_signature.inputs_to_buffers
    updated = [
        n.args[1].name
        for n in program.graph.nodes
        if n.op == "call_function" and "update_cache" in str(n.target)
    ]
    assert updated and all(name in buffers for name in updated), updated
    assert len({buffers[name] for name in updated}) == 2 * layers


def test_full_logits_option_returns_every_position():
    model = tiny_model("qwen3")
    prompt = torch.randint(3, model.config.vocab_size, (1, 9))
    with torch.no_grad():
        want = model(input_ids=prompt).logits
    module, program = _export(model, max_seq_len=16, max_context_len=32, last_logits_only=False)
    got = program.module()(prompt, torch.arange(9))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_bad_sizes_are_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="max_seq_len"):
        CausalLMExportableModule(copy.deepcopy(model), max_seq_len=100, max_context_len=64)
