"""EdgeViewsOutsideXnnpackPartitioner: the views at a partition's edge go to ExecuTorch (as
memory views), the views inside and the weights' views stay in XNNPACK, no partition is split,
and the program computes what eager PyTorch and the stock partitioner's program compute."""

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import delegation_report
from executorch_optimum.xnnpack.partitioner import (
    EdgeViewsOutsideXnnpackPartitioner,
    merge_touching_partitions,
)

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


def _tagged_graph(tags: dict[str, str]) -> torch.fx.Graph:
    """a -> b -> c -> d, with a side path a -> outside -> d; nodes tagged as `tags` says."""

    def chain(x: torch.Tensor) -> torch.Tensor:
        a = x + 1
        b = a * 2
        outside = torch.cumsum(a, 0)
        c = b - 3
        return c * outside

    graph = torch.fx.symbolic_trace(chain).graph
    names = {"add": "a", "mul": "b", "cumsum": "outside", "sub": "c", "mul_1": "d"}
    for node in graph.nodes:
        tag = tags.get(names.get(node.name, ""))
        if tag is not None:
            node.meta["delegation_tag"] = tag
    return graph


def _tags(graph: torch.fx.Graph) -> dict[str, str | None]:
    return {node.name: node.meta.get("delegation_tag") for node in graph.nodes if node.op == "call_function"}


def test_touching_partitions_merge_unless_a_path_leaves_and_returns():
    # b and c touch and nothing outside lies between them: one partition.
    graph = _tagged_graph({"a": "tag0", "b": "tag1", "c": "tag2"})
    assert merge_touching_partitions(graph) == 2
    assert set(_tags(graph).values()) == {"tag0", None}
    # d takes a path through the untagged cumsum from a: a and d never merge, b and c join
    # whichever side keeps the graph acyclic.
    graph = _tagged_graph({"a": "tag0", "b": "tag1", "c": "tag1", "d": "tag2"})
    merge_touching_partitions(graph)
    tags = _tags(graph)
    assert tags["add"] != tags["mul_1"] and tags["cumsum"] is None
    assert len({tags["add"], tags["mul_1"]}) == 2
