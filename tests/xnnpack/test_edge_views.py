"""EdgeViewsOutsideXnnpackPartitioner: the views at a partition's edge go to ExecuTorch (as
memory views), the views inside and the weights' views stay in XNNPACK, no partition is split,
and the program computes what eager PyTorch and the stock partitioner's program compute."""

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import delegation_report
from executorch_optimum.xnnpack.partitioner import EdgeViewsOutsideXnnpackPartitioner

HIDDEN, HEADS = 32, 4


class HeadsThroughAPortableOp(torch.nn.Module):
    """proj -> split heads -> an op XNNPACK does not take (cumsum) -> merge heads -> out, then
    a view inside a partition and a multiply by a view of a weight."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(HIDDEN, HIDDEN)
        self.out = torch.nn.Linear(HIDDEN, HIDDEN)
        self.last = torch.nn.Linear(HIDDEN, HIDDEN)
        self.scale = torch.nn.Parameter(torch.rand(HIDDEN) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = self.proj(x * 2.0).view(1, -1, HEADS, HIDDEN // HEADS)
        mixed = torch.cumsum(heads, dim=-1)
        merged = self.out(mixed.reshape(1, -1, HIDDEN))
        inner = (merged * 3.0).view(1, -1, HEADS, HIDDEN // HEADS) * self.scale.view(1, 1, HEADS, -1)
        return self.last(inner.reshape(1, -1, HIDDEN))


def _lower(partitioner: object):  # noqa: ANN202
    torch.manual_seed(0)
    model = HeadsThroughAPortableOp().eval()
    seq = torch.export.Dim("seq", min=1, max=16)
    exported = torch.export.export(
        model, (torch.randn(1, 3, HIDDEN),), dynamic_shapes=({1: seq},), strict=False
    )
    edge = to_edge_transform_and_lower(
        {"forward": exported},
        partitioner=[partitioner],
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
    )
    report = delegation_report(edge).methods["forward"]
    return model, report, edge.to_executorch().buffer


def test_edge_views_leave_the_partitions_and_values_hold():
    model, ours, buffer = _lower(EdgeViewsOutsideXnnpackPartitioner())
    _, stock, stock_buffer = _lower(XnnpackPartitioner())

    # Stock: all five views are delegated. Ours: the head split feeding cumsum and the merge
    # after it leave; the views between delegated ops and the weight's view stay.
    assert stock.delegated["XnnpackBackend"]["aten.view_copy.default"] == 5
    assert ours.delegated["XnnpackBackend"]["aten.view_copy.default"] == 3
    assert ours.portable["aten.view_copy.default"] == 2
    assert ours.num_delegate_calls == stock.num_delegate_calls == 2
    assert ours.delegated["XnnpackBackend"]["aten.linear.default"] == 3

    method = Runtime.get().load_program(buffer).load_method("forward")
    stock_method = Runtime.get().load_program(stock_buffer).load_method("forward")
    for seq_len in (1, 5, 16):
        x = torch.randn(1, seq_len, HIDDEN)
        (got,) = method.execute([x])
        (stock_got,) = stock_method.execute([x])
        with torch.no_grad():
            want = model(x)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(got, stock_got)
