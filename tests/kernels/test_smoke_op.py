"""Our C++ path end to end: a Bazel-built op in eager PyTorch, in export, in ExecuTorch."""

import torch
from executorch.exir import to_edge
from executorch.runtime import Runtime

from executorch_optimum import kernels


class ScaledAdd(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.ops.eo.scaled_add(a, b, 0.5) * 2.0


def _reference(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    return (a.double() + alpha * b.double()).float()


def test_eager_op_matches_reference():
    kernels.load_torch_ops()
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(torch.ops.eo.scaled_add(a, b, -1.5), _reference(a, b, -1.5))


def test_eager_op_rejects_bad_dtype():
    kernels.load_torch_ops()
    a = torch.randn(3, dtype=torch.float64)
    try:
        torch.ops.eo.scaled_add(a, a, 1.0)
    except RuntimeError as err:
        assert "float32" in str(err)
    else:
        raise AssertionError("float64 input was accepted")


def test_op_exports_and_runs_in_executorch(tmp_path):
    kernels.load_torch_ops()
    kernels.load_et_kernels()
    a, b = torch.randn(2, 7), torch.randn(2, 7)
    exported = torch.export.export(ScaledAdd(), (a, b))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert "eo.scaled_add.default" in targets
    program = to_edge(exported).to_executorch()
    pte = tmp_path / "scaled_add.pte"
    pte.write_bytes(program.buffer)

    method = Runtime.get().load_program(pte).load_method("forward")
    x, y = torch.randn(2, 7), torch.randn(2, 7)
    (got,) = method.execute([x, y])
    torch.testing.assert_close(got, _reference(x, y, 0.5) * 2.0)
