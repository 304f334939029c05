"""Delegate preprocessing on copies of the partitions that share the weights with the originals.

Before preprocessing, ExecuTorch's `to_backend` deep-copies every partition's program, all
partitions at once, "in case backends change graph inside preprocess": the copies include
the weights, so a model's weights are in memory twice at the lowering's peak (SmolLM2-135M
fp32: +540 MB). XNNPACK's preprocessing changes graphs and adds new constants; it does not
write into existing weight tensors. `preprocess_copies_share_weights()` keeps the graph copy
and lets the copy point at the original tensors. Programs stay byte-identical
(tests/xnnpack/test_shared_weights.py).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def program_tensors(program: torch.export.ExportedProgram) -> list[torch.Tensor]:
    """Every weight, buffer and lifted constant tensor `program` holds."""
    tensors = list(program.state_dict.values())
    tensors += [value for value in program.constants.values() if isinstance(value, torch.Tensor)]
    tensors += list(program.graph_module.parameters()) + list(program.graph_module.buffers())
    return tensors


def copy_sharing_tensors(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """A deep copy of `program` whose tensors are `program`'s own (the memo maps each to itself)."""
    memo = {id(tensor): tensor for tensor in program_tensors(program)}
    return copy.deepcopy(program, memo)


@contextmanager
def preprocess_copies_share_weights() -> Iterator[None]:
    """While active, XNNPACK preprocesses partition copies that share the original tensors.

    Patches `XnnpackBackend.copy_exported_program_for_preprocess` (a class attribute: not
    thread-safe, like the other lowering patches) and restores it on exit.
    """
    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend

    stock = XnnpackBackend.__dict__.get("copy_exported_program_for_preprocess")

    def copy_for_preprocess(cls, edge_program, compile_specs):  # noqa: ANN001, ANN202, ARG001
        return copy_sharing_tensors(edge_program)

    XnnpackBackend.copy_exported_program_for_preprocess = classmethod(copy_for_preprocess)
    try:
        yield
    finally:
        if stock is None:
            del XnnpackBackend.copy_exported_program_for_preprocess
        else:
            XnnpackBackend.copy_exported_program_for_preprocess = stock
