"""MeanLastDimAsLinearPass, MeanLastDimAsPoolingPass and InferredViewDimPass: the ops they
rewrite end up inside XNNPACK, and the lowered program still computes what eager PyTorch
computes.
CancelPermutePairsPass, MergeViewsPass and ScalarAddAsLinearBiasPass: fewer operators, the
same values."""

import pytest
import torch
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from executorch_optimum.xnnpack.passes import (
    CancelPermutePairsPass,
    MeanLastDimAsLinearPass,
    MergeViewsPass,
    ScalarAddAsLinearBiasPass,
    default_transform_passes,
)

HIDDEN = 48
HEAD = 8


class NormThenHeads(torch.nn.Module):
    """RMSNorm (a mean over the last dim) -> projection -> head split with the traced length."""

    def __init__(self, per_head_norm: bool) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(HIDDEN) + 0.5)
        self.proj = torch.nn.Linear(HIDDEN, HIDDEN)
        self.out = torch.nn.Linear(HIDDEN, HIDDEN)
        self.per_head_norm = per_head_norm

    @staticmethod
    def _rms(x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self._rms(x) * self.weight)
        heads = h.view(*x.shape[:-1], -1, HEAD)  # [1, S, H, D]: symbolic S in the shape
        if self.per_head_norm:
            heads = self._rms(heads)  # Qwen3's q/k norm: a 4-D mean over the last dim
        return self.out(heads.transpose(1, 2).transpose(1, 2).reshape(x.shape))


def _lower(model: torch.nn.Module, passes=None):  # noqa: ANN001, ANN202
    seq = torch.export.Dim("seq", min=1, max=32)
    example = (torch.randn(1, 5, HIDDEN),)
    exported = torch.export.export(model, example, dynamic_shapes=({1: seq},), strict=False)
    return export_to_executorch_with_xnnpack({"forward": exported}, transform_passes=passes)


def _pooling_passes() -> list:
    """The default passes without MeanLastDimAsLinearPass: every mean takes the pooling form."""
    return [p for p in default_transform_passes() if not isinstance(p, MeanLastDimAsLinearPass)]


@pytest.mark.parametrize("mean_as", ["linear", "pooling"])
@pytest.mark.parametrize("per_head_norm", [False, True])
def test_norm_and_head_split_are_delegated_and_match_eager(per_head_norm, mean_as):
    torch.manual_seed(0)
    model = NormThenHeads(per_head_norm).eval()
    lowered = _lower(model, passes=None if mean_as == "linear" else _pooling_passes())

    portable = lowered.report.portable_ops()
    assert not any("mean" in op or "view" in op for op in portable), portable
    delegated = lowered.report.delegated_ops()
    norms = 2 if per_head_norm else 1
    if mean_as == "linear":  # fp32: each norm's mean is one more linear, no mean is left
        assert delegated["aten.linear.default"] == 2 + norms
        assert "aten.mean.dim" not in delegated
    else:
        assert delegated["aten.mean.dim"] == norms
    method = Runtime.get().load_program(lowered.buffer).load_method("forward")
    for seq_len in (1, 7, 32):
        x = torch.randn(1, seq_len, HIDDEN)
        (got,) = method.execute([x])
        with torch.no_grad():
            want = model(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if mean_as == "linear":  # each norm's epsilon went into its mean linear's bias; no other add
        assert "aten.add.Tensor" not in delegated and "aten.add.Tensor" not in portable


def test_without_the_passes_the_norm_stays_portable():
    """The reference point: the same graph lowered without our passes keeps mean.dim outside."""
    torch.manual_seed(0)
    lowered = _lower(NormThenHeads(per_head_norm=False).eval(), passes=[])
    assert any("mean" in op for op in lowered.report.portable_ops())


class Permutes(torch.nn.Module):
    """Two pairs of permutes: one cancels, one composes into a single permute."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cancelled = x.permute(0, 2, 1, 3).permute(0, 2, 1, 3)
        composed = x.permute(0, 2, 1, 3).permute(3, 0, 2, 1)
        return cancelled + cancelled, composed * composed


class Views(torch.nn.Module):
    """A chain of views of one source, and the same view of another source taken twice."""

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heads = x.reshape(-1, HIDDEN).reshape(1, -1, HIDDEN).reshape(1, -1, HIDDEN // HEAD, HEAD)
        return heads + table.reshape(1, -1, 1, HEAD), heads * table.reshape(1, -1, 1, HEAD)


def _edge_program(model: torch.nn.Module, example: tuple, pass_) -> tuple[torch.export.ExportedProgram, dict]:  # noqa: ANN001
    """The model's edge program after `pass_`, and its operator counts before."""
    from executorch.exir import EdgeCompileConfig, to_edge

    exported = torch.export.export(model, example, strict=False)
    program = to_edge(exported, compile_config=EdgeCompileConfig(_check_ir_validity=False)).exported_program()
    before = _count_targets(program.graph_module)
    pass_(program.graph_module)
    program.graph_module.graph.lint()
    return program, before


def _count_targets(graph_module: torch.fx.GraphModule) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_function":
            name = str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
            counts[name] = counts.get(name, 0) + 1
    return counts


def test_permute_pairs_cancel_or_compose_and_values_hold():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    program, before = _edge_program(Permutes(), (x,), CancelPermutePairsPass())
    assert before["permute_copy"] == 4
    assert _count_targets(program.graph_module)["permute_copy"] == 1
    for got, want in zip(program.module()(x), Permutes()(x), strict=True):
        assert torch.equal(got, want)


def test_view_chains_merge_and_equal_views_are_shared():
    torch.manual_seed(0)
    x, table = torch.randn(1, 5, HIDDEN), torch.randn(5, HEAD)
    program, before = _edge_program(Views(), (x, table), MergeViewsPass())
    # The 3-view chain becomes 1 and the two equal table views become 1.
    assert before["view_copy"] == 5
    assert _count_targets(program.graph_module)["view_copy"] == 2
    for got, want in zip(program.module()(x, table), Views()(x, table), strict=True):
        assert torch.equal(got, want)


def test_llama_layers_keep_no_transposes():
    """Rotary in sequence-major layout plus CancelPermutePairsPass: transformers' head
    transposes and ours meet and cancel, so no activation transpose is left in a layer."""
    from executorch_optimum.modules import CausalLMExportableModule
    from tests.support.tiny_models import tiny_model

    module = CausalLMExportableModule(tiny_model("qwen3"), max_seq_len=8, max_context_len=32)
    lowered = export_to_executorch_with_xnnpack(module)
    ops = lowered.report.delegated_ops() + lowered.report.portable_ops()
    assert "aten.permute_copy.default" not in ops, ops
    assert "dim_order_ops._clone_dim_order.default" not in ops, ops


class LinearsPlusConstants(torch.nn.Module):
    """Which `linear + constant` adds fold: only a scalar after a bias-free fp32 linear used once."""

    def __init__(self) -> None:
        super().__init__()
        self.plain = torch.nn.Linear(HIDDEN, HEAD, bias=False)
        self.biased = torch.nn.Linear(HIDDEN, HEAD)
        self.shared = torch.nn.Linear(HIDDEN, HEAD, bias=False)
        self.row = torch.nn.Parameter(torch.randn(HEAD))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        shared = self.shared(x)
        return (
            (self.plain(x) + 0.25) * 2.0,  # folds
            (0.5 + self.plain(x * 2.0)) * 2.0,  # folds (constant first)
            (self.biased(x) + 0.25) * 2.0,  # keeps: the linear has a bias already
            (self.plain(x) + self.row) * 2.0,  # keeps: not a scalar
            (shared + 0.25) * 2.0,  # keeps: the linear has another user
            shared * 2.0,
            self.plain(x) + 0.75,  # keeps: a graph output (the signature names it)
        )


@pytest.mark.parametrize("fold", [True, False])
def test_scalar_adds_fold_into_linear_bias_where_exact(fold):
    torch.manual_seed(0)
    model = LinearsPlusConstants().eval()
    x = torch.randn(1, 3, HIDDEN)
    passes = [p for p in default_transform_passes() if fold or not isinstance(p, ScalarAddAsLinearBiasPass)]
    lowered = export_to_executorch_with_xnnpack(
        {"forward": torch.export.export(model, (x,), strict=False)}, transform_passes=passes
    )
    ops = lowered.report.delegated_ops() + lowered.report.portable_ops()
    assert ops["aten.linear.default"] == 6
    assert ops["aten.add.Tensor"] == (4 if fold else 6)
    got = Runtime.get().load_program(lowered.buffer).load_method("forward").execute([x])
    with torch.no_grad():
        want = model(x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)
