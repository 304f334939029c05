"""Edge-dialect graph passes that make exported LLM graphs lower cleanly."""

from __future__ import annotations

import torch
from executorch.exir.dialects._ops import ops as exir_ops
from executorch.exir.pass_base import ExportPass, PassResult


class RemovePaddingIdxEmbeddingPass(ExportPass):
    """Drops the `padding_idx` argument of `aten.embedding` calls.

    `padding_idx` only changes the gradient, never the forward value, so an inference graph
    loses nothing. Keeping it breaks quantized embeddings: ExecuTorch's quant-fusion patterns
    (dequantize_affine + embedding -> quantized_decomposed.embedding_{byte,4bit}) only match the
    two-argument form, so the table's dequantize op is left in the graph and `to_executorch`
    fails with "Missing out variants: {'torchao::dequantize_affine'}".
    """

    _EMBEDDING_TARGETS = (exir_ops.edge.aten.embedding.default, torch.ops.aten.embedding.default)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        modified = False
        for node in graph_module.graph.nodes:
            if node.op != "call_function" or node.target not in self._EMBEDDING_TARGETS:
                continue
            if len(node.args) > 2 or "padding_idx" in node.kwargs:
                node.args = node.args[:2]
                node.kwargs = {k: v for k, v in node.kwargs.items() if k != "padding_idx"}
                modified = True
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)


def default_transform_passes() -> list[ExportPass]:
    """The passes every XNNPACK export runs on the edge graph before partitioning."""
    return [RemovePaddingIdxEmbeddingPass()]
