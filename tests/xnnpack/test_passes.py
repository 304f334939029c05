"""RemovePaddingIdxEmbeddingPass: unit behaviour on an edge graph, and the lowering it unblocks."""

import executorch.kernels.quantized  # noqa: F401  (quantized embedding kernels for the runtime)
import pytest
import torch
from executorch.exir import EdgeCompileConfig, to_edge
from executorch.exir.dialects._ops import ops as exir_ops
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import (
    RemovePaddingIdxEmbeddingPass,
    export_to_executorch_with_xnnpack,
    quantize_model_,
)


class EmbedThenProject(torch.nn.Module):
    def __init__(self, padding_idx: int | None = 3) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(40, 32, padding_idx=padding_idx)
        self.proj = torch.nn.Linear(32, 16)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(tokens))


def _embedding_nodes(graph_module: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in graph_module.graph.nodes if n.target == exir_ops.edge.aten.embedding.default]


def _tokens() -> torch.Tensor:
    # Includes the padding index itself: its row must still be looked up.
    return torch.tensor([[3, 0, 7, 39, 3, 12]])


def test_pass_drops_padding_idx_and_keeps_values():
    model = EmbedThenProject().eval()
    edge = to_edge(
        torch.export.export(model, (_tokens(),)), compile_config=EdgeCompileConfig(_check_ir_validity=False)
    )
    graph_module = edge.exported_program().graph_module
    (before,) = _embedding_nodes(graph_module)
    assert len(before.args) == 3 and before.args[2] == 3

    result = RemovePaddingIdxEmbeddingPass()(graph_module)

    assert result.modified
    (after,) = _embedding_nodes(result.graph_module)
    assert len(after.args) == 2 and "padding_idx" not in after.kwargs
    # Forward values are unchanged (padding_idx only affects gradients).
    with torch.no_grad():
        want = model(_tokens())
    got = edge.exported_program().module()(_tokens())
    torch.testing.assert_close(got, want)


def test_pass_leaves_graph_without_padding_idx_unmodified():
    model = EmbedThenProject(padding_idx=None).eval()
    edge = to_edge(
        torch.export.export(model, (_tokens(),)), compile_config=EdgeCompileConfig(_check_ir_validity=False)
    )
    result = RemovePaddingIdxEmbeddingPass()(edge.exported_program().graph_module)
    assert not result.modified


@pytest.mark.parametrize("qembedding", ["8w", "4w"])
def test_quantized_embedding_with_padding_idx_needs_the_pass(qembedding):
    """Without the pass the dequantized table stays unfused and to_executorch fails; with it the
    embedding becomes ExecuTorch's quantized embedding kernel and matches eager."""
    model = EmbedThenProject().eval()
    quantize_model_(model, qembedding=qembedding, qembedding_group_size=0 if qembedding == "8w" else 32)
    exported = torch.export.export(model, (_tokens(),))

    with pytest.raises(RuntimeError, match="Missing out variants"):
        export_to_executorch_with_xnnpack({"forward": exported}, transform_passes=[])

    lowered = export_to_executorch_with_xnnpack({"forward": exported})
    method = Runtime.get().load_program(lowered.buffer).load_method("forward")
    (got,) = method.execute([_tokens()])
    with torch.no_grad():
        want = model(_tokens())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The projection still went to XNNPACK; the embedding is a quantized portable kernel.
    assert lowered.report.delegated_ops()["aten.linear.default"] == 1
    assert any("embedding" in op for op in lowered.report.portable_ops())
