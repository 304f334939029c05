"""Partition copies for XNNPACK preprocessing share the weights: same program bytes as
ExecuTorch's full deep copy, and the original weights are left untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from executorch_optimum.modules import CausalLMExportableModule
from executorch_optimum.xnnpack import QuantizationConfig, export_to_executorch_with_xnnpack
from executorch_optimum.xnnpack.shared_weights import copy_sharing_tensors, program_tensors
from tests.support.tiny_models import tiny_model


@pytest.mark.parametrize("quantize", [None, QuantizationConfig(qlinear="8da4w", qembedding="8w")])
def test_programs_are_identical_to_full_copies(quantize) -> None:  # noqa: ANN001
    model = tiny_model("llama", tie_word_embeddings=True)

    def lower(share: bool) -> bytes:
        module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=8, max_context_len=32)
        return export_to_executorch_with_xnnpack(
            module, quantize=quantize, share_preprocess_weights=share
        ).buffer

    assert lower(True) == lower(False)


def test_copy_shares_tensors_but_not_the_graph() -> None:
    program = torch.export.export(torch.nn.Linear(8, 4), (torch.randn(2, 8),))
    copied = copy_sharing_tensors(program)
    assert copied.graph_module is not program.graph_module
    assert next(iter(copied.graph.nodes)) is not next(iter(program.graph.nodes))
    original_ptrs = {t.data_ptr() for t in program_tensors(program)}
    assert original_ptrs and {t.data_ptr() for t in program_tensors(copied)} == original_ptrs


def test_lowering_leaves_the_weights_untouched() -> None:
    model = tiny_model("llama", tie_word_embeddings=True)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    export_to_executorch_with_xnnpack(CausalLMExportableModule(model, max_seq_len=8, max_context_len=32))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0, msg=name)
