"""The .pte, run in the ExecuTorch runtime, computes what the eager model computes.

fp32 programs against the eager model; 8da4w programs against the eager model quantized
the same way (so the test isolates export/lowering error from quantization error).
"""

import copy

import pytest
import torch
from executorch.runtime import Runtime

from executorch_optimum.modules import CausalLMExportableModule
from executorch_optimum.xnnpack import (
    QuantizationConfig,
    apply_quantization_,
    export_to_executorch_with_xnnpack,
)
from tests.support.parity import assert_same_run, eager_trace, program_trace
from tests.support.tiny_models import TINY_CONFIGS, linears_after_lowering, tiny_model

DECODE_STEPS = 32
# Lowering cost grows with layers; two layers still hold one sliding and one global layer.
FEWER_LAYERS = {
    "gemma3": {"num_hidden_layers": 2, "sliding_window_pattern": 2},
    "gemma2": {"num_hidden_layers": 2},
}


def _pte_trace(module, tmp_path, prompt, forced):
    lowered = export_to_executorch_with_xnnpack(module)
    # Every projection (q/k/v/o, MLP, LM head) runs in XNNPACK, none on the portable path.
    portable = lowered.report.portable_ops()
    assert not [op for op in portable if "linear" in op or "mm" in op], portable
    assert lowered.report.delegated_ops()["aten.linear.default"] == linears_after_lowering(module.model)
    pte = tmp_path / "model.pte"
    pte.write_bytes(lowered.buffer)
    method = Runtime.get().load_program(pte).load_method("forward")
    return program_trace(lambda ids, pos: method.execute([ids, pos])[0], prompt, DECODE_STEPS, 16, forced)


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_fp32_pte_matches_eager(arch, tmp_path):
    model = tiny_model(arch, **FEWER_LAYERS.get(arch, {}))
    prompt = torch.randint(3, model.config.vocab_size, (1, 12))
    want = eager_trace(model, prompt, DECODE_STEPS)
    module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=16, max_context_len=64)
    assert_same_run(_pte_trace(module, tmp_path, prompt, want.tokens), want)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_8da4w_pte_matches_eager_quantized_model(arch, tmp_path):
    model = tiny_model(arch, **FEWER_LAYERS.get(arch, {}))
    apply_quantization_(model, QuantizationConfig(qlinear="8da4w", qlinear_group_size=32))
    prompt = torch.randint(3, model.config.vocab_size, (1, 12))
    want = eager_trace(model, prompt, DECODE_STEPS)
    module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=16, max_context_len=64)
    # XNNPACK's int8 kernels round activations differently from torchao's reference
    # dequantize-quantize path (one quantum here and there): allow 2e-2 of the logit scale,
    # and still demand the same greedy tokens.
    assert_same_run(_pte_trace(module, tmp_path, prompt, want.tokens), want, rel_tol=2e-2)
