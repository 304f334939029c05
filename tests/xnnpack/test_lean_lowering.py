"""Lean lowering (idle XNNPACK passes and the double decomposition skipped) gives the same bytes.

Reference: the same lowering on ExecuTorch's stock path (`lean_lowering=False`).
"""

from __future__ import annotations

import copy

import pytest
import torch

from executorch_optimum.modules import CausalLMExportableModule
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from executorch_optimum.xnnpack.lean_lowering import (
    PASS_ANCHORS,
    needed_passes,
    single_decomposition_suffices,
)
from tests.support.tiny_models import tiny_model


class ConvNet(torch.nn.Module):
    """Holds the ops of the anchored passes: conv, batch norm, relu, hardtanh, cat, pad, upsample,
    softmax, max pooling; NHWC copies appear while lowering (channels-last pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.norm = torch.nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm(self.conv(x)))
        y = torch.nn.functional.hardtanh(torch.cat([y, y * 2], dim=1))
        y = torch.nn.functional.pad(y, (1, 1, 1, 1))
        y = torch.nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear")
        return torch.softmax(torch.nn.functional.max_pool2d(y, 2), dim=-1)


def _both(make_module, **kwargs) -> tuple[bytes, bytes]:
    lean = export_to_executorch_with_xnnpack(make_module(), **kwargs).buffer
    full = export_to_executorch_with_xnnpack(make_module(), lean_lowering=False, **kwargs).buffer
    return lean, full


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_decoder_programs_are_identical(arch: str) -> None:
    model = tiny_model(arch)
    lean, full = _both(
        lambda: CausalLMExportableModule(copy.deepcopy(model), max_seq_len=8, max_context_len=32)
    )
    assert lean == full


def test_quantized_decoder_program_is_identical() -> None:
    """Quantize/dequantize nodes: the passes anchored on them run."""
    from executorch_optimum.xnnpack import QuantizationConfig

    model = tiny_model("llama")
    lean, full = _both(
        lambda: CausalLMExportableModule(copy.deepcopy(model), max_seq_len=8, max_context_len=32),
        quantize=QuantizationConfig(qlinear="8da4w", qembedding="8w"),
    )
    assert lean == full


def test_multimodal_program_is_identical() -> None:
    from executorch_optimum.modules import ImageTextToTextExportableModule
    from tests.multimodal.tiny_vlm import tiny_gemma3_vlm

    model = tiny_gemma3_vlm()
    lean, full = _both(
        lambda: ImageTextToTextExportableModule(copy.deepcopy(model), max_seq_len=8, max_context_len=32)
    )
    assert lean == full


def test_network_with_every_anchor_op_is_identical() -> None:
    torch.manual_seed(0)
    net = ConvNet().eval()
    example = (torch.randn(1, 3, 12, 12),)
    lean, full = _both(lambda: torch.export.export(copy.deepcopy(net), example))
    assert lean == full


def test_passes_are_dropped_only_without_their_ops() -> None:
    from executorch.backends.xnnpack._passes import XNNPACKPassManager
    from executorch.exir import to_edge

    def edge_graph(module: torch.nn.Module, example: tuple) -> torch.fx.Graph:
        return to_edge(torch.export.export(module, example)).exported_program().graph

    everything = XNNPACKPassManager(None).passes
    graph = edge_graph(ConvNet().eval(), (torch.randn(1, 3, 12, 12),))
    missing = {p.__name__ for p in everything} - {p.__name__ for p in needed_passes(everything, graph)}
    # It lacks PReLU and quantize/dequantize; copies only appear during preprocessing.
    assert missing == {"PReLUReshapePass", "PropagateCustomMetaPass", "RemoveRedundantCopyPass"}, missing
    linear = edge_graph(torch.nn.Linear(4, 4), (torch.randn(2, 4),))
    kept = {p.__name__ for p in needed_passes(everything, linear)}
    assert kept == {p.__name__ for p in everything} - set(PASS_ANCHORS)


def test_a_pass_sees_the_ops_an_earlier_pass_added(monkeypatch) -> None:
    """The channels-last pass adds the copies RemoveRedundantCopyPass is anchored on."""
    from executorch.backends.xnnpack._passes.remove_redundant_copy_pass import RemoveRedundantCopyPass

    calls = []
    stock_call = RemoveRedundantCopyPass.call
    monkeypatch.setattr(
        RemoveRedundantCopyPass, "call", lambda self, gm: calls.append(gm) or stock_call(self, gm)
    )
    torch.manual_seed(0)
    export_to_executorch_with_xnnpack(torch.export.export(ConvNet().eval(), (torch.randn(1, 3, 12, 12),)))
    assert calls


def test_decomposition_traces_once(monkeypatch) -> None:
    """The stock path traces three times (empty table, keep table, full table); lean once."""
    from torch.export import ExportedProgram

    tables = []
    stock = ExportedProgram.run_decompositions
    monkeypatch.setattr(
        ExportedProgram,
        "run_decompositions",
        lambda self, table=None, *a, **k: tables.append(table) or stock(self, table, *a, **k),
    )
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Hardswish())
    make = lambda: torch.export.export(module, (torch.randn(2, 4),))  # noqa: E731
    export_to_executorch_with_xnnpack(make(), lean_lowering=False)
    stock_traces = len(tables)
    tables.clear()
    export_to_executorch_with_xnnpack(make())
    assert (stock_traces, len(tables)) == (3, 1), tables


class _Partitioner:
    """Stands in for XnnpackPartitioner: asks to keep linear, accepts nodes by a check."""

    def __init__(self, check) -> None:
        self.check = check

    def ops_to_not_decompose(self, program):
        return [torch.ops.aten.linear.default], self.check


def test_double_decomposition_is_kept_when_a_node_is_refused() -> None:
    program = torch.export.export(torch.nn.Linear(4, 4), (torch.randn(2, 4),)).run_decompositions({})
    keep_all = list
    assert single_decomposition_suffices(_Partitioner(lambda node: True), program, keep_all)
    assert single_decomposition_suffices(_Partitioner(None), program, keep_all)
    # One refused node, or an op that cannot be preserved at all: the stock path must run.
    assert not single_decomposition_suffices(_Partitioner(lambda node: False), program, keep_all)
    assert not single_decomposition_suffices(_Partitioner(lambda node: True), program, lambda ops: [])
