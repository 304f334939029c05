"""InitializedBufferPass: the same program as ExecuTorch's InitializedMutableBufferPass, which
re-traces the graph to flag the same placeholders, and the flagged buffer keeps its value."""

import torch
from executorch.exir import ExecutorchBackendConfig, to_edge
from executorch.exir.passes import MemoryPlanningPass
from executorch.exir.passes.init_mutable_pass import InitializedMutableBufferPass
from executorch.runtime import Runtime

from executorch_optimum.xnnpack.passes import InitializedBufferPass


class Counter(torch.nn.Module):
    """Two mutable buffers with non-zero initial values; only one is asked to keep its value."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cache_positions", torch.arange(4, dtype=torch.float32) + 10)
        self.register_buffer("scratch", torch.full((4,), 7.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache_positions.add_(x)
        self.scratch.add_(x)
        return self.cache_positions + self.scratch * 0


def _program(init_pass) -> bytes:  # noqa: ANN001
    exported = torch.export.export(Counter(), (torch.ones(4),))
    config = ExecutorchBackendConfig(
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False), passes=[init_pass]
    )
    return to_edge(exported).to_executorch(config).buffer


def test_same_program_as_executorch_pass() -> None:
    ours = _program(InitializedBufferPass(["cache_positions"]))
    stock = _program(InitializedMutableBufferPass(["cache_positions"]))
    assert ours == stock
    assert ours != _program(InitializedBufferPass(["no_such_buffer"]))


def test_flagged_buffer_starts_from_its_initial_value() -> None:
    method = (
        Runtime.get()
        .load_program(_program(InitializedBufferPass(["cache_positions"])))
        .load_method("forward")
    )
    (first,) = method.execute([torch.ones(4)])
    (second,) = method.execute([torch.ones(4)])
    initial = torch.arange(4, dtype=torch.float32) + 10
    torch.testing.assert_close(first, initial + 1)
    torch.testing.assert_close(second, initial + 2)
