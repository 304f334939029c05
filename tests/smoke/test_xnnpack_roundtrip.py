"""The whole toolchain once: torch.export -> XNNPACK lowering -> .pte -> ExecuTorch runtime."""

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime


class TwoLayerMlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


def test_xnnpack_program_matches_eager(tmp_path):
    model = TwoLayerMlp().eval()
    example = (torch.randn(4, 16),)
    exported = torch.export.export(model, example)
    lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    delegated = [
        n
        for n in lowered.exported_program().graph.nodes
        if n.op == "call_function" and "delegate" in str(n.target)
    ]
    assert delegated, "nothing was delegated to XNNPACK"
    program = lowered.to_executorch()
    pte = tmp_path / "mlp.pte"
    pte.write_bytes(program.buffer)

    method = Runtime.get().load_program(pte).load_method("forward")
    x = torch.randn(4, 16)
    (got,) = method.execute([x])
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
