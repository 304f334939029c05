"""MeanLastDimAsPoolingPass and InferredViewDimPass: the ops they rewrite end up inside
XNNPACK, and the lowered program still computes what eager PyTorch computes."""

import pytest
import torch
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack

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


@pytest.mark.parametrize("per_head_norm", [False, True])
def test_norm_and_head_split_are_delegated_and_match_eager(per_head_norm):
    torch.manual_seed(0)
    model = NormThenHeads(per_head_norm).eval()
    lowered = _lower(model)

    portable = lowered.report.portable_ops()
    assert not any("mean" in op or "view" in op for op in portable), portable
    method = Runtime.get().load_program(lowered.buffer).load_method("forward")
    for seq_len in (1, 7, 32):
        x = torch.randn(1, seq_len, HIDDEN)
        (got,) = method.execute([x])
        with torch.no_grad():
            want = model(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_without_the_passes_the_norm_stays_portable():
    """The reference point: the same graph lowered without our passes keeps mean.dim outside."""
    torch.manual_seed(0)
    lowered = _lower(NormThenHeads(per_head_norm=False).eval(), passes=[])
    assert any("mean" in op for op in lowered.report.portable_ops())
