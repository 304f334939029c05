"""ShareActivationQuantizationPass: linears reading one activation quantize it once (8da4w),
linears on different activations keep their own quantization, and the program's values are
those of the program without the pass (bit for bit) and close to the eager quantized model."""

import torch
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from executorch_optimum.xnnpack.passes import ShareActivationQuantizationPass, default_transform_passes
from executorch_optimum.xnnpack.quantize import quantize_model_

HIDDEN = 64


class AttentionAndMlpInputs(torch.nn.Module):
    """q/k/v read one tensor, gate/up another; o reads a third (a layer's linears)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(HIDDEN, HIDDEN, bias=False) for _ in range(3))
        self.gate, self.up = (torch.nn.Linear(HIDDEN, 2 * HIDDEN, bias=False) for _ in range(2))
        self.down = torch.nn.Linear(2 * HIDDEN, HIDDEN, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.q(x) * self.k(x) + self.v(x)
        y = h * 0.5
        return h + self.down(torch.sigmoid(self.gate(y)) * self.up(y))


def _lower(model: torch.nn.Module, share: bool):  # noqa: ANN202
    passes = [p for p in default_transform_passes() if not isinstance(p, ShareActivationQuantizationPass)]
    if share:
        passes.insert(0, ShareActivationQuantizationPass())
    seq = torch.export.Dim("seq", min=1, max=32)
    exported = torch.export.export(
        model, (torch.randn(1, 4, HIDDEN),), dynamic_shapes=({1: seq},), strict=False
    )
    return export_to_executorch_with_xnnpack({"forward": exported}, transform_passes=passes)


def _activation_quantizations(result) -> int:  # noqa: ANN001
    delegated = result.report.methods["forward"].delegated["XnnpackBackend"]
    return delegated["torchao.choose_qparams_affine.default"]


def test_shared_activations_are_quantized_once_with_the_same_values():
    torch.manual_seed(0)
    model = AttentionAndMlpInputs().eval()
    quantize_model_(model, "8da4w", 32)
    shared, separate = _lower(model, share=True), _lower(model, share=False)

    # Three sources (x, y, the down projection's input) instead of one per linear (6).
    assert _activation_quantizations(separate) == 6
    assert _activation_quantizations(shared) == 3
    for result in (shared, separate):
        method = result.report.methods["forward"]
        assert method.num_portable == 0 and method.num_delegate_calls == 1

    shared_method = Runtime.get().load_program(shared.buffer).load_method("forward")
    separate_method = Runtime.get().load_program(separate.buffer).load_method("forward")
    for seq_len in (1, 7, 32):
        x = torch.randn(1, seq_len, HIDDEN)
        (got,) = shared_method.execute([x])
        (separate_got,) = separate_method.execute([x])
        with torch.no_grad():
            want = model(x)
        assert torch.equal(got, separate_got)
        torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)
