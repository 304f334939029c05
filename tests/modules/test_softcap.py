"""Gemma 2 logit softcapping is honoured where it matters (caps active), and the parity
check is sharp enough to notice when it is dropped."""

import copy

import pytest
import torch

from executorch_optimum.modules import CausalLMExportableModule
from tests.support.parity import assert_same_run, eager_trace, program_trace
from tests.support.tiny_models import tiny_model

STEPS = 32


def _capped_gemma2():
    """Gemma 2 with q/k and the final norm scaled so scores exceed 50 and logits 30."""
    model = tiny_model("gemma2")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(25)
            layer.self_attn.k_proj.weight.mul_(25)
        model.model.norm.weight.fill_(100.0)
    return model


def _drop_softcaps(model):
    model.config.attn_logit_softcapping = None
    model.config.final_logit_softcapping = None
    for layer in model.model.layers:
        layer.self_attn.attn_logit_softcapping = None
    return model


def _exported_trace(model, prompt, forced):
    module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=16, max_context_len=64)
    program = module.export()["forward"]
    return program_trace(program.module(), prompt, STEPS, chunk=16, forced=forced)


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = _capped_gemma2()
    prompt = torch.randint(3, model.config.vocab_size, (1, 12))
    return model, prompt, eager_trace(model, prompt, STEPS)


def test_caps_are_active(case):
    model, prompt, want = case
    uncapped = eager_trace(_drop_softcaps(copy.deepcopy(model)), prompt, STEPS)
    assert max(float(x.abs().max()) for x in uncapped.logits) > 30.0
    assert max(float((a - b).abs().max()) for a, b in zip(uncapped.logits, want.logits, strict=True)) > 1.0


def test_softcapped_export_matches_eager(case):
    model, prompt, want = case
    assert_same_run(_exported_trace(model, prompt, want.tokens), want)


def test_parity_check_fails_without_softcapping(case):
    model, prompt, want = case
    got = _exported_trace(_drop_softcaps(copy.deepcopy(model)), prompt, want.tokens)
    with pytest.raises(AssertionError):
        assert_same_run(got, want)
