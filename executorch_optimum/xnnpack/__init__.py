"""Lowering to ExecuTorch through XNNPACK: graph passes, quantization, delegation report."""

from executorch_optimum.xnnpack.lower import (
    DEFAULT_INITIALIZED_BUFFERS,
    ExportableModule,
    WeightOnlyLinearError,
    XnnpackExport,
    export_to_executorch_with_xnnpack,
    find_weight_only_linears,
)
from executorch_optimum.xnnpack.passes import (
    MeanLastDimAsPoolingPass,
    RemovePaddingIdxEmbeddingPass,
    default_transform_passes,
)
from executorch_optimum.xnnpack.quantize import (
    EMBEDDING_SCHEMES,
    LINEAR_SCHEMES,
    QuantizationConfig,
    apply_quantization_,
    quantize_model_,
)
from executorch_optimum.xnnpack.report import DelegationReport, MethodDelegation, delegation_report

__all__ = [
    "DEFAULT_INITIALIZED_BUFFERS",
    "EMBEDDING_SCHEMES",
    "LINEAR_SCHEMES",
    "DelegationReport",
    "ExportableModule",
    "MethodDelegation",
    "QuantizationConfig",
    "MeanLastDimAsPoolingPass",
    "RemovePaddingIdxEmbeddingPass",
    "WeightOnlyLinearError",
    "XnnpackExport",
    "apply_quantization_",
    "default_transform_passes",
    "delegation_report",
    "export_to_executorch_with_xnnpack",
    "find_weight_only_linears",
    "quantize_model_",
]
