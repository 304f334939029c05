"""XNNPACK's partitioner, minus the reshapes that only hand a tensor across a partition's edge.

A view at the edge of a delegated partition (a q/k/v projection split into heads for our
attention op, the attention output merged back for the output projection) is a reshape
operator that XNNPACK reshapes, sets up and runs (a copy) on every call: four per decoder
layer. Left to ExecuTorch, the same view becomes `et_view`, which aliases the tensor's memory
and costs an instruction. Such a view can leave the partition without splitting it: either
none of its users is in the partition (the partition then outputs the view's input), or its
input is computed outside (the partition then takes the view as an input).

XNNPACK's partitioner merges its node groups in one greedy pass and never retries a merge it
refused while a node between the two sat in a third partition. Groups that span a wide range
of the graph (one quantized activation shared by q/k/v, see ShareActivationQuantizationPass)
then leave partitions that touch each other apart, each one more delegate call per token.
`merge_touching_partitions` retries those merges until none is left that keeps the graph
acyclic.
"""

from __future__ import annotations

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir.backend.partitioner import PartitionResult
from executorch.exir.dialects._ops import ops as exir_ops
from torch.fx.passes.utils.fuser_utils import validate_partition

_VIEW = exir_ops.edge.aten.view_copy.default
_TAG = "delegation_tag"


def _is_edge_view(node: torch.fx.Node, tag: str) -> bool:
    """True for a view in partition `tag` that can leave it without splitting it."""
    source = node.args[0]
    if not isinstance(source, torch.fx.Node):
        return False
    users_inside = any(user.meta.get(_TAG) == tag for user in node.users)
    if not users_inside:
        return True
    # A computed input from outside; never a weight, which XNNPACK must see as a constant.
    return source.op == "call_function" and source.meta.get(_TAG) != tag


def untag_edge_views(graph: torch.fx.Graph) -> int:
    """Takes every edge view out of its partition (repeatedly: one may expose another);
    returns how many."""
    moved = 0
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            tag = node.meta.get(_TAG)
            if tag is not None and node.target is _VIEW and _is_edge_view(node, tag):
                del node.meta[_TAG]
                moved += 1
                changed = True
    return moved


def _members(graph: torch.fx.Graph) -> dict[str, list[torch.fx.Node]]:
    members: dict[str, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        tag = node.meta.get(_TAG)
        if tag is not None:
            members.setdefault(tag, []).append(node)
    return members


def _mergeable_neighbour(members: dict[str, list[torch.fx.Node]], tag: str) -> str | None:
    """A partition that `tag` feeds and whose union with it has no path out and back in."""
    fed = {user.meta.get(_TAG) for node in members[tag] for user in node.users} - {tag, None}
    for other in sorted(fed):
        combined = [n for n in members[tag] + members[other] if n.op == "call_function"]
        if validate_partition(combined):
            return other
    return None


def merge_touching_partitions(graph: torch.fx.Graph) -> int:
    """Merges partitions that feed each other wherever the graph stays acyclic; returns how
    many merges. Sweeps until one merges nothing: a merge can make a refused one acyclic."""
    members = _members(graph)
    merged = 0
    swept_without_merge = False
    while not swept_without_merge:
        swept_without_merge = True
        for tag in list(members):
            while tag in members and (other := _mergeable_neighbour(members, tag)) is not None:
                for node in members[other]:
                    node.meta[_TAG] = tag
                members[tag].extend(members.pop(other))
                merged += 1
                swept_without_merge = False
    return merged


class EdgeViewsOutsideXnnpackPartitioner(XnnpackPartitioner):
    """XnnpackPartitioner whose partitions leave the views at their edges to ExecuTorch."""

    def partition(self, exported_program: torch.export.ExportedProgram) -> PartitionResult:
        result = super().partition(exported_program)
        merge_touching_partitions(result.tagged_exported_program.graph)
        untag_edge_views(result.tagged_exported_program.graph)
        used = {node.meta.get(_TAG) for node in result.tagged_exported_program.graph.nodes}
        tags = {tag: spec for tag, spec in result.partition_tags.items() if tag in used}
        return PartitionResult(tagged_exported_program=result.tagged_exported_program, partition_tags=tags)
