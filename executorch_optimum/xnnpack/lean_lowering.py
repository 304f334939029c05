"""XNNPACK lowering without the re-traces that cannot change the program.

Most of a decoder's lowering time is spent re-tracing whole graphs with fake tensors and
symbolic shapes. Three kinds of re-trace are skipped, each only when provably idle:

- Delegate preprocessing: `XnnpackBackend.preprocess` runs 17 passes over every partition,
  each a re-trace. Twelve of them only rewrite one kind of op (batch norm, convolution, PReLU,
  bilinear upsampling, softmax attention, relu/hardtanh fusion, padding, concatenation,
  max pooling indices, quantize/dequantize metadata, dtype copies); each is skipped when the
  partition, as it stands when the pass's turn comes, holds none of its ops.
- Decomposition: for a partitioner with a per-node support check, `to_edge_transform_and_lower`
  decomposes twice more (once keeping the ops XNNPACK asks for, then again after marking the
  nodes its check accepts). When every node of those ops is valid to keep and accepted, the
  result equals ExecuTorch's one-pass path for partitioners without a check, which is taken.
- Functionalisation: that one-pass path still traces twice, first with an empty table (to
  functionalise), then with the decomposition table. One trace with the table does both, so
  a method with a single partitioner is decomposed once before ExecuTorch's empty-table call,
  which then returns the program as it is (it is already functional), and the table call
  finds nothing left to decompose and is skipped by ExecuTorch itself.

`lean_xnnpack_lowering()` applies all three while lowering; the programs stay byte-identical
(tests/xnnpack/test_lean_lowering.py compares whole programs with the stock path).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
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
    "RemoveGetItemPass": frozenset({"max_pool2d_with_indices", "max"}),
    "PropagateCustomMetaPass": frozenset(
        {
            f"{kind}_{granularity}"
            for kind in ("quantize", "dequantize")
            for granularity in ("per_tensor", "per_channel", "per_channel_group", "per_token", "affine")
        }
    ),
    # Its input copies may come from ChannelsLastTaggedReshapePass, which runs just before:
    # the anchors are checked on the graph as it is when the pass's turn comes.
    "RemoveRedundantCopyPass": frozenset({"_to_copy"}),
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


def can_change(pass_: type, graph: torch.fx.Graph) -> bool:
    """False only for an anchored pass whose anchor ops the graph does not hold."""
    anchors = PASS_ANCHORS.get(pass_.__name__)
    return anchors is None or bool(anchors & op_names(graph))


def needed_passes(passes: list[type], graph: torch.fx.Graph) -> list[type]:
    """`passes` minus those whose anchor ops the graph does not hold (order kept)."""
    return [p for p in passes if can_change(p, graph)]


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


def decompose_once(
    program: torch.export.ExportedProgram, partitioners: Sequence[object], default_table: dict
) -> torch.export.ExportedProgram:
    """`program` functionalised and decomposed in one trace, keeping the ops `partitioners` ask for."""
    table = dict(default_table)
    for partitioner in partitioners:
        for op in partitioner.ops_to_not_decompose(program)[0]:
            table.pop(op, None)
    return program.run_decompositions(table)


@contextmanager
def lean_xnnpack_lowering() -> Iterator[None]:
    """While active, lowering skips the idle re-traces described in the module docstring."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack._passes import XNNPACKPassManager
    from executorch.exir.program import _program

    class LeanPassManager(XNNPACKPassManager):
        def transform(self) -> torch.export.ExportedProgram:
            program = self.exported_program
            for pass_ in self.passes:
                # Checked per pass: an earlier pass may have added the anchor ops.
                if can_change(pass_, program.graph):
                    program = XNNPACKPassManager(program, [pass_]).transform()
            return program

    stock_manager = xnnpack_preprocess.XNNPACKPassManager
    stock_can_skip = _program._can_skip_using_EDGE_DO_NOT_DECOMP

    def can_skip(partitioner: object, program: torch.export.ExportedProgram) -> bool:
        return single_decomposition_suffices(
            partitioner, program, _program._remove_invalid_ops_for_not_decompose
        )

    stock_pre_decomposition = _program._apply_pre_decomposition_transforms
    stock_run_decompositions = torch.export.ExportedProgram.run_decompositions
    decomposed: weakref.WeakSet = weakref.WeakSet()

    def pre_decomposition(
        program: torch.export.ExportedProgram, partitioners: list
    ) -> torch.export.ExportedProgram:
        program = stock_pre_decomposition(program, partitioners)
        if len(partitioners) != 1:
            return program  # no partitioner: default table; several: one table each, in turn
        program = decompose_once(program, partitioners, _program._default_decomposition_table())
        decomposed.add(program)
        return program

    def run_decompositions(self, decomp_table=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if decomp_table == {} and self in decomposed and not args and not kwargs:
            return self  # already functional: the empty-table trace would change nothing
        return stock_run_decompositions(self, decomp_table, *args, **kwargs)

    xnnpack_preprocess.XNNPACKPassManager = LeanPassManager
    _program._can_skip_using_EDGE_DO_NOT_DECOMP = can_skip
    _program._apply_pre_decomposition_transforms = pre_decomposition
    torch.export.ExportedProgram.run_decompositions = run_decompositions
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager = stock_manager
        _program._can_skip_using_EDGE_DO_NOT_DECOMP = stock_can_skip
        _program._apply_pre_decomposition_transforms = stock_pre_decomposition
        torch.export.ExportedProgram.run_decompositions = stock_run_decompositions
