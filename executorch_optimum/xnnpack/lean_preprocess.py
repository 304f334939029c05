"""XNNPACK's delegate preprocessing without the passes that cannot touch a partition.

`XnnpackBackend.preprocess` runs 17 graph passes over every partition, and each one
re-traces the whole partition with fake tensors and symbolic shapes: for a decoder that is
about half of the lowering time. Nine of them only rewrite one kind of op (batch norm,
convolution, PReLU, bilinear upsampling, softmax-based attention, relu/hardtanh fusion,
padding, concatenation); when a partition holds none of it, the pass changes nothing but
still pays the re-trace. `lean_xnnpack_preprocess()` skips exactly those; the delegate blobs
stay byte-identical (tests/xnnpack/test_lean_preprocess.py compares whole programs).
"""

from __future__ import annotations

from collections.abc import Iterator
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


@contextmanager
def lean_xnnpack_preprocess() -> Iterator[None]:
    """While active, XNNPACK preprocessing runs only the passes that can change a partition."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack._passes import XNNPACKPassManager

    class LeanPassManager(XNNPACKPassManager):
        def __init__(
            self, exported_program: torch.export.ExportedProgram, passes: list | None = None
        ) -> None:
            super().__init__(exported_program, passes)
            self.passes = needed_passes(list(self.passes), exported_program.graph)

    original = xnnpack_preprocess.XNNPACKPassManager
    xnnpack_preprocess.XNNPACKPassManager = LeanPassManager
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager = original
