"""export -> edge -> XNNPACK -> ExecuTorch program, with runner metadata and a delegation report."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from executorch.exir import (
    EdgeCompileConfig,
    EdgeProgramManager,
    ExecutorchBackendConfig,
    ExecutorchProgramManager,
    to_edge_transform_and_lower,
)
from executorch.exir.pass_base import ExportPass
from executorch.exir.passes import MemoryPlanningPass
from torch.export import ExportedProgram

from executorch_optimum.xnnpack.checkpoint_pages import page_out_checkpoints
from executorch_optimum.xnnpack.lean_lowering import lean_xnnpack_lowering
from executorch_optimum.xnnpack.partitioner import EdgeViewsOutsideXnnpackPartitioner
from executorch_optimum.xnnpack.passes import InitializedBufferPass, default_transform_passes
from executorch_optimum.xnnpack.quantize import (
    WEIGHT_ONLY_LINEAR_SCHEMES,
    QuantizationConfig,
    apply_quantization_,
)
from executorch_optimum.xnnpack.report import DelegationReport, delegation_report
from executorch_optimum.xnnpack.shared_weights import preprocess_copies_share_weights
from executorch_optimum.xnnpack.spill import spill_named_data
from executorch_optimum.xnnpack.tied_weights import store_shared_weights_once

logger = logging.getLogger(__name__)

MetadataValue = int | bool | float | str | list[int] | list[float]

# Mutable buffers whose initial value the program must carry (default: left uninitialised).
# Our caches keep their write positions in buffers with these names; KV tensors start at
# zero and are deliberately absent (serialising them would bloat the .pte).
DEFAULT_INITIALIZED_BUFFERS = ("cache_positions",)


@runtime_checkable
class ExportableModule(Protocol):
    """What the lowering needs from a task wrapper: its programs and its runner metadata."""

    def export(self) -> dict[str, ExportedProgram]: ...

    def metadata(self) -> dict[str, MetadataValue]: ...


@dataclass
class XnnpackExport:
    """The lowering's result: the program (`.buffer` is the .pte), its report and metadata."""

    program: ExecutorchProgramManager
    report: DelegationReport
    metadata: dict[str, MetadataValue]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def buffer(self) -> bytes:
        return self.program.buffer


class WeightOnlyLinearError(ValueError):
    """Raised for weight-only quantized linears, which XNNPACK (ExecuTorch 1.5.1) miscomputes."""


def _weight_only_message(where: str) -> str:
    return (
        f"weight-only quantized linear layers ({where}) cannot be lowered to XNNPACK: ExecuTorch 1.5.1 "
        "delegates them but computes wrong results; use qlinear 8da4w or 8da8w"
    )


def _is_dequantize(node: object) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and "dequantize" in str(node.target)


def find_weight_only_linears(program: ExportedProgram) -> list[str]:
    """Names of linear nodes whose weight is dequantized but whose activation is plain float."""
    found = []
    for node in program.graph.nodes:
        if node.op != "call_function" or node.target is not torch.ops.aten.linear.default:
            continue
        activation, weight = node.args[0], node.args[1]
        if _is_dequantize(weight) and not _is_dequantize(activation):
            found.append(node.name)
    return found


def _resolve_programs(
    module: ExportableModule | Mapping[str, ExportedProgram] | ExportedProgram,
    metadata: Mapping[str, MetadataValue] | None,
    quantize: QuantizationConfig | None,
) -> tuple[dict[str, ExportedProgram], dict[str, MetadataValue]]:
    if isinstance(module, ExportedProgram):
        module = {"forward": module}
    if isinstance(module, Mapping):
        if quantize is not None and quantize.enabled:
            raise ValueError("quantize= needs an exportable module: these programs are already exported")
        return dict(module), dict(metadata or {})
    if not isinstance(module, ExportableModule):
        raise TypeError(
            f"expected an exportable module (export() and metadata()) or a dict of ExportedPrograms, "
            f"got {type(module).__name__}"
        )
    if quantize is not None and quantize.enabled:
        target = module if isinstance(module, torch.nn.Module) else getattr(module, "model", None)
        if not isinstance(target, torch.nn.Module):
            raise ValueError("quantize= needs the exportable module to be an nn.Module or expose .model")
        quantize.check_model(target)
        apply_quantization_(target, quantize)
    programs = module.export()
    merged = dict(module.metadata())
    merged.update(metadata or {})
    return dict(programs), merged


def _validate_metadata(metadata: Mapping[str, MetadataValue]) -> None:
    for name, value in metadata.items():
        # A list is returned flattened (one output per element); one element type per list.
        ok = isinstance(value, int | float | str) or (
            isinstance(value, list | tuple)
            and (
                all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                or all(isinstance(v, float) for v in value)
            )
        )
        if not ok:
            raise ValueError(
                f"metadata {name!r} must be an int, bool, float, str, or a list of ints or of floats, "
                f"got {value!r}"
            )


def export_to_executorch_with_xnnpack(
    module: ExportableModule | Mapping[str, ExportedProgram] | ExportedProgram,
    *,
    metadata: Mapping[str, MetadataValue] | None = None,
    quantize: QuantizationConfig | None = None,
    transform_passes: Sequence[ExportPass] | None = None,
    initialized_buffers: Sequence[str] = DEFAULT_INITIALIZED_BUFFERS,
    skip_dim_order: bool = False,
    lean_lowering: bool = True,
    spill_weights: bool = True,
    spill_dir: Path | None = None,
    share_preprocess_weights: bool = True,
    dedupe_weights: bool = True,
    page_out_checkpoint: bool = True,
) -> XnnpackExport:
    """Lowers every method through XNNPACK into one ExecuTorch program.

    `module` is an exportable module (its `export()` gives method -> ExportedProgram, its
    `metadata()` the runner metadata) or already exported programs. `metadata` entries are
    written as constant methods (explicit ones override the module's). `quantize` is applied to
    the module's eager model (the module itself if it is an nn.Module, else its `.model`) before
    export. Graph inputs are not memory planned (the caller owns them), delegate blobs are
    extracted into segments, and buffers whose names contain one of `initialized_buffers` keep
    their initial value in the program. `lean_lowering` skips re-traces that cannot change
    the result (same bytes, less time; see lean_lowering.py). `spill_weights` keeps the
    delegate's weight blobs in files in `spill_dir` (default: the temp dir) until the program is
    written, instead of a second in-memory copy of the weights (same bytes; see spill.py).
    `share_preprocess_weights` lets the partition copies XNNPACK preprocesses share the
    weights instead of duplicating them all (same bytes; see shared_weights.py).
    `dedupe_weights` writes a weight that both the program's kernels and XNNPACK
    read (a tied embedding in fp32) into the .pte once (see tied_weights.py).
    `page_out_checkpoint` hands the pages of memory-mapped safetensors files (the checkpoint
    the weights are views of) back to the kernel after each spilled blob, so the checkpoint
    is not resident whole while lowering (same bytes; see checkpoint_pages.py).
    """
    if quantize is not None and quantize.qlinear in WEIGHT_ONLY_LINEAR_SCHEMES:
        raise WeightOnlyLinearError(_weight_only_message(f"qlinear {quantize.qlinear!r}"))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    programs, merged_metadata = _resolve_programs(module, metadata, quantize)
    timings["export_s"] = time.perf_counter() - start
    if not programs:
        raise ValueError("nothing to lower: the module exported no methods")
    clashes = sorted(set(programs) & set(merged_metadata))
    if clashes:
        raise ValueError(f"metadata names clash with method names: {', '.join(clashes)}")
    _validate_metadata(merged_metadata)
    merged_metadata = {k: list(v) if isinstance(v, tuple) else v for k, v in merged_metadata.items()}
    for name, program in programs.items():
        weight_only = find_weight_only_linears(program)
        if weight_only:
            raise WeightOnlyLinearError(
                _weight_only_message(f"method {name!r}: {', '.join(weight_only[:3])}")
            )

    start = time.perf_counter()
    passes = list(transform_passes) if transform_passes is not None else default_transform_passes()
    with contextlib.ExitStack() as stack:
        if lean_lowering:
            stack.enter_context(lean_xnnpack_lowering())
        if spill_weights:
            after_each = page_out_checkpoints if page_out_checkpoint else None
            stack.enter_context(spill_named_data(spill_dir, after_each=after_each))
        if share_preprocess_weights:
            stack.enter_context(preprocess_copies_share_weights())
        edge: EdgeProgramManager = to_edge_transform_and_lower(
            programs,
            transform_passes=passes,
            partitioner=[EdgeViewsOutsideXnnpackPartitioner()],
            constant_methods=merged_metadata or None,
            compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=skip_dim_order),
        )
    timings["lower_s"] = time.perf_counter() - start
    # to_executorch rewrites the edge graphs in place: count delegation first.
    report = delegation_report(edge)

    start = time.perf_counter()
    with store_shared_weights_once() if dedupe_weights else contextlib.nullcontext():
        program = edge.to_executorch(
            ExecutorchBackendConfig(
                extract_delegate_segments=True,
                do_quant_fusion_and_const_prop=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                passes=[InitializedBufferPass(initialized_buffers)] if initialized_buffers else [],
            )
        )
    timings["to_executorch_s"] = time.perf_counter() - start
    logger.info("XNNPACK lowering: %s", report.summary())
    return XnnpackExport(program=program, report=report, metadata=merged_metadata, timings=timings)
