"""XNNPACK lowering without the re-traces that cannot change the program.

Most of a decoder's lowering time is spent re-tracing whole graphs with fake tensors and
symbolic shapes. Two kinds of re-trace are skipped, each only when provably idle:

- Delegate preprocessing: `XnnpackBackend.preprocess` runs 17 passes over every partition,
  each a re-trace. Nine of them only rewrite one kind of op (batch norm, convolution, PReLU,
  bilinear upsampling, softmax attention, relu/hardtanh fusion, padding, concatenation); a
  partition without that op keeps them out.
- Decomposition: for a partitioner with a per-node support check, `to_edge_transform_and_lower`
  decomposes twice more (once keeping the ops XNNPACK asks for, then again after marking the
  nodes its check accepts). When every node of those ops is valid to keep and accepted, the
  result equals ExecuTorch's one-pass path for partitioners without a check, which is taken.

`lean_xnnpack_lowering()` applies both while lowering; the programs stay byte-identical
(tests/xnnpack/test_lean_lowering.py compares whole programs with the stock path).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

# Pass class name -> the ops (schema names, no namespace) it rewrites; absent = always run.
PASS_ANCHORS: dict[str, frozenset[str]] = {
    "ConvertToUpsampleBilinear2d": frozenset({"upsample_bilinear2d"}),
    "ConvertToSDPAPass": frozenset({"_softmax"}),
    "FuseBatchNormPass": frozenset({"native_batch_norm", "_native_batch_norm_legit_no_training"}),
    "DecomposeBatchNorm": frozenset({"native_batch_norm", "_native_batch_norm_legit_no_training"}),
    "Conv1dUnsqueezePass": frozenset({"convolution"}),
    "PReLUReshapePass": frozenset({"_prelu_kernel"}),
    "FuseActivationPass": frozenset({"relu", "hardtanh"}),
    "InsertPadQDQPass": frozenset({"constant_pad_nd"}),
    "DecomposeConcatenate": frozenset({"cat"}),
}


def op_names(graph: torch.fx.Graph) -> set[str]:
    """Schema names without namespace ("cat", "_softmax") of the graph's operator calls."""
    names = set()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        op = getattr(node.target, "_op", node.target)  # edge ops wrap the aten overload
        schema = getattr(op, "_schema", None)
        if schema is not None:
            names.add(schema.name.split("::")[-1])
    return names


def needed_passes(passes: list[type], graph: torch.fx.Graph) -> list[type]:
    """`passes` minus those whose anchor ops the graph does not hold (order kept)."""
    present = op_names(graph)

    def can_change(pass_: type) -> bool:
        anchors = PASS_ANCHORS.get(pass_.__name__)
        return anchors is None or bool(anchors & present)

    return [p for p in passes if can_change(p)]


def single_decomposition_suffices(
    partitioner: object, program: torch.export.ExportedProgram, keep_valid: Callable[[list], list]
) -> bool:
    """True when every node of an op the partitioner wants kept may be kept and passes its check.

    `keep_valid` is ExecuTorch's filter of ops that can be preserved at all (not mutable, not
    aliasing, not block-listed); graphs with control flow take the stock path.
    """
    from executorch.exir.graph_module import get_control_flow_submodules

    ops, check = partitioner.ops_to_not_decompose(program)
    if check is None:
        return True
    if get_control_flow_submodules(program.graph_module):
        return False
    wanted = set(ops)
    keepable = set(keep_valid(list(ops)))
    for node in program.graph.nodes:
        if node.op == "call_function" and node.target in wanted:
            if node.target not in keepable or not check(node):
                return False
    return True


@contextmanager
def lean_xnnpack_lowering() -> Iterator[None]:
    """While active, lowering skips the idle re-traces described in the module docstring."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack._passes import XNNPACKPassManager
    from executorch.exir.program import _program

    class LeanPassManager(XNNPACKPassManager):
        def __init__(
            self, exported_program: torch.export.ExportedProgram, passes: list | None = None
        ) -> None:
            super().__init__(exported_program, passes)
            self.passes = needed_passes(list(self.passes), exported_program.graph)

    stock_manager = xnnpack_preprocess.XNNPACKPassManager
    stock_can_skip = _program._can_skip_using_EDGE_DO_NOT_DECOMP

    def can_skip(partitioner: object, program: torch.export.ExportedProgram) -> bool:
        return single_decomposition_suffices(
            partitioner, program, _program._remove_invalid_ops_for_not_decompose
        )

    xnnpack_preprocess.XNNPACKPassManager = LeanPassManager
    _program._can_skip_using_EDGE_DO_NOT_DECOMP = can_skip
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager = stock_manager
        _program._can_skip_using_EDGE_DO_NOT_DECOMP = stock_can_skip
