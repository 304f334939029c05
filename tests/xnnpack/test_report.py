"""DelegationReport against ExecuTorch's own devtools delegation count on the same edge program."""

import json

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.devtools.backend_debug import get_delegation_info
from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

from executorch_optimum.xnnpack import delegation_report, export_to_executorch_with_xnnpack


class Mixed(torch.nn.Module):
    """Linears (XNNPACK) around ops XNNPACK does not take (fp32 embedding, argmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 16)
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 16)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.down(torch.relu(self.up(self.embed(tokens))))
        return hidden, hidden.argmax(-1)


def _edge():
    exported = torch.export.export(Mixed().eval(), (torch.tensor([[1, 2, 3]]),))
    return to_edge_transform_and_lower(
        {"forward": exported},
        partitioner=[XnnpackPartitioner()],
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
    )


def test_counts_agree_with_executorch_devtools():
    edge = _edge()
    report = delegation_report(edge)
    reference = get_delegation_info(edge.exported_program("forward").graph_module)

    method = report.methods["forward"]
    assert method.num_delegate_calls == reference.num_delegated_subgraphs >= 1
    assert method.num_delegated == reference.num_delegated_nodes
    # devtools counts the delegate's getitem outputs as portable nodes; we do not.
    getitems = sum(b.non_delegated for k, b in reference.delegation_by_operator.items() if k == "getitem")
    assert method.num_portable == reference.num_non_delegated_nodes - getitems

    # Per op: devtools names ops after their node names (aten_linear_default).
    for op, count in report.delegated_ops().items():
        assert reference.delegation_by_operator[op.replace(".", "_")].delegated == count, op
    for op, count in report.portable_ops().items():
        assert reference.delegation_by_operator[op.replace(".", "_")].non_delegated == count, op
    assert report.delegated_ops()["aten.linear.default"] == 2
    assert {"aten.embedding.default", "aten.argmax.default"} <= set(report.portable_ops())


def test_json_and_table_carry_the_same_counts():
    report = export_to_executorch_with_xnnpack(
        {"forward": torch.export.export(Mixed().eval(), (torch.tensor([[1, 2, 3]]),))}
    ).report
    data = json.loads(report.to_json())
    assert data["num_delegated"] == report.num_delegated
    assert data["num_portable"] == report.num_portable
    assert data["methods"]["forward"]["delegated"]["XnnpackBackend"] == dict(report.delegated_ops())
    assert data["methods"]["forward"]["portable"] == dict(report.portable_ops())

    table = report.to_table().splitlines()
    rows = {line.split()[1]: line.split()[2:] for line in table[2:-1]}
    for op, count in report.delegated_ops().items():
        assert rows[op][0] == str(count)
    for op, count in report.portable_ops().items():
        assert rows[op][1] == str(count)
    assert table[-1] == report.summary()
    assert f"{report.num_delegated}/{report.num_delegated + report.num_portable} ops delegated" in table[-1]
