"""Delegation report: which ops of an edge program run in XNNPACK and which stay portable."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import torch

# Bookkeeping nodes that are not computation: never counted on either side.
_IGNORED_OPS = frozenset({"getitem", "executorch_call_delegate"})


def _op_name(node: torch.fx.Node) -> str:
    """A stable op name like "aten.linear.default" for edge and plain ATen targets alike."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._opname}.{target._overloadname}"
    return getattr(target, "__name__", None) or str(target)


def _count_ops(graph: torch.fx.Graph) -> Counter[str]:
    counts: Counter[str] = Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node)
        if name in _IGNORED_OPS:
            continue
        counts[name] += 1
    return counts


@dataclass
class MethodDelegation:
    """Per-method op counts: `delegated[backend][op]` and `portable[op]`."""

    method: str
    delegated: dict[str, dict[str, int]] = field(default_factory=dict)
    portable: dict[str, int] = field(default_factory=dict)
    num_delegate_calls: int = 0

    @property
    def num_delegated(self) -> int:
        return sum(sum(ops.values()) for ops in self.delegated.values())

    @property
    def num_portable(self) -> int:
        return sum(self.portable.values())


@dataclass
class DelegationReport:
    """How much of each method runs in a backend; `to_json()` for tools, `to_table()` for people."""

    methods: dict[str, MethodDelegation]

    @property
    def num_delegated(self) -> int:
        return sum(m.num_delegated for m in self.methods.values())

    @property
    def num_portable(self) -> int:
        return sum(m.num_portable for m in self.methods.values())

    def delegated_ops(self, backend: str = "XnnpackBackend") -> Counter[str]:
        """Op name -> count delegated to `backend`, summed over methods."""
        total: Counter[str] = Counter()
        for method in self.methods.values():
            total.update(method.delegated.get(backend, {}))
        return total

    def portable_ops(self) -> Counter[str]:
        """Op name -> count left on the portable (non-delegated) path, summed over methods."""
        total: Counter[str] = Counter()
        for method in self.methods.values():
            total.update(method.portable)
        return total

    def to_dict(self) -> dict:
        return {
            "num_delegated": self.num_delegated,
            "num_portable": self.num_portable,
            "methods": {
                name: {
                    "num_delegated": m.num_delegated,
                    "num_portable": m.num_portable,
                    "num_delegate_calls": m.num_delegate_calls,
                    "delegated": {b: dict(sorted(ops.items())) for b, ops in sorted(m.delegated.items())},
                    "portable": dict(sorted(m.portable.items())),
                }
                for name, m in sorted(self.methods.items())
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def summary(self) -> str:
        """One line, e.g. for a CLI's closing summary."""
        total = self.num_delegated + self.num_portable
        share = 100.0 * self.num_delegated / total if total else 0.0
        return f"{self.num_delegated}/{total} ops delegated ({share:.1f}%), {self.num_portable} on the portable path"

    def to_table(self) -> str:
        """A plain-text table: one row per (method, op) with delegated and portable counts."""
        rows: list[tuple[str, str, str, str]] = []
        for name, method in sorted(self.methods.items()):
            ops: dict[str, dict[str, int]] = {}
            for backend, counts in method.delegated.items():
                for op, n in counts.items():
                    ops.setdefault(op, {})[backend] = n
            for op, n in method.portable.items():
                ops.setdefault(op, {})["portable"] = n
            for op in sorted(ops):
                where = ops[op]
                delegated = sum(v for k, v in where.items() if k != "portable")
                rows.append((name, op, str(delegated), str(where.get("portable", 0))))
        header = ("method", "op", "delegated", "portable")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

        def fmt(row: tuple[str, ...]) -> str:
            return "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )

        lines = [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]
        lines.append(self.summary())
        return "\n".join(lines)


def _method_delegation(method: str, program: torch.export.ExportedProgram) -> MethodDelegation:
    graph_module = program.graph_module
    result = MethodDelegation(method=method)
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and "executorch_call_delegate" in str(node.target):
            result.num_delegate_calls += 1
            lowered = getattr(graph_module, node.args[0].target)
            backend = lowered.backend_id
            counts = result.delegated.setdefault(backend, {})
            for op, n in _count_ops(lowered.original_module.graph).items():
                counts[op] = counts.get(op, 0) + n
    result.portable = dict(_count_ops(graph_module.graph))
    return result


def delegation_report(edge_manager: object) -> DelegationReport:
    """Builds the report from an EdgeProgramManager (after lowering, before `to_executorch`).

    `to_executorch` rewrites the edge graphs in place (out variants, memory planning), so
    the counts must be taken first.
    """
    methods = {
        name: _method_delegation(name, edge_manager.exported_program(name)) for name in edge_manager.methods
    }
    return DelegationReport(methods=methods)
