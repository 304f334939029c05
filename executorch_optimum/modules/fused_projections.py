"""One linear for sibling projections that read the same tensor (q/k/v, gate/up).

A decode step runs each linear as its own XNNPACK operator: its own dispatch to the
threadpool (both threads meet at a barrier), and with 8da4w its own dynamic quantization
of the same activation. Fusing siblings that share their input into one wider linear does
that once per group instead of once per member. The result is unchanged: every output
row keeps its own weights (and, quantized, its own groups and scales), and the members'
outputs are slices of the fused one.

The Hugging Face model keeps its code: each member becomes a `_FusedMember` that returns
its slice of the group's output; the first member called with an input computes the whole
group, the others take their slices of that same result. Groups are found by watching one
short eager forward, so any architecture whose siblings share an input is covered.
"""

from __future__ import annotations

from collections import defaultdict

import torch


class _SharedInputLinear(torch.nn.Module):
    """The concatenated weights of a group, computed once per input tensor."""

    def __init__(self, members: list[torch.nn.Linear]) -> None:
        super().__init__()
        first = members[0]
        has_bias = any(m.bias is not None for m in members)
        self.sizes = [m.out_features for m in members]
        self.linear = torch.nn.Linear(
            first.in_features, sum(self.sizes), bias=has_bias, dtype=first.weight.dtype
        )
        with torch.no_grad():
            self.linear.weight.copy_(torch.cat([m.weight for m in members]))
            if has_bias:
                biases = [
                    m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in members
                ]
                self.linear.bias.copy_(torch.cat(biases))
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._taken: list[bool] = []

    def member_output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self._input is not x or self._taken[index]:
            # One split op: XNNPACK refuses slices of dynamic shapes, so the split runs on
            # the portable path either way, and one op costs less than one slice per member.
            self._input, self._outputs = x, torch.split(self.linear(x), self.sizes, dim=-1)
            self._taken = [False] * len(self.sizes)
        self._taken[index] = True
        output = self._outputs[index]
        if all(self._taken):  # drop the references: the next forward starts afresh
            self._input, self._outputs, self._taken = None, (), []
        return output


class _FusedMember(torch.nn.Module):
    """Stands where a member linear was; its output is the group's slice."""

    def __init__(self, group: _SharedInputLinear, index: int, in_features: int, out_features: int) -> None:
        super().__init__()
        object.__setattr__(self, "_group", group)  # owned by the parent, not registered twice
        self.index = index
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._group.member_output(self.index, x)


def _is_float_linear(module: torch.nn.Module) -> bool:
    """A plain linear with plain weights (quantized weights are tensor subclasses: not fused)."""
    return type(module) is torch.nn.Linear and type(module.weight.data) is torch.Tensor


def _sibling_groups(model: torch.nn.Module, probe: dict) -> list[tuple[torch.nn.Module, list[str]]]:
    """(parent, member names) for sibling linears that each read one same tensor once."""
    seen: dict[str, list[torch.Tensor]] = defaultdict(list)  # held, so no id() is reused
    linears = {n: m for n, m in model.named_modules() if _is_float_linear(m)}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: seen[name].append(args[0]))
        for name, module in linears.items()
    ]
    try:
        with torch.no_grad():
            model(**probe)
    finally:
        for hook in hooks:
            hook.remove()
    by_input: dict[tuple[str, int], list[str]] = defaultdict(list)
    for name, calls in seen.items():
        if len(calls) == 1:
            parent = name.rpartition(".")[0]
            by_input[(parent, id(calls[0]))].append(name)
    groups = []
    for (parent_name, _), names in by_input.items():
        members = [linears[n] for n in names]
        if len(names) < 2 or len({(m.in_features, m.weight.dtype) for m in members}) != 1:
            continue
        groups.append((model.get_submodule(parent_name), [n.rpartition(".")[2] for n in names]))
    return groups


def fuse_shared_input_projections(model: torch.nn.Module) -> int:
    """Fuses every group of sibling linears that read the same tensor; returns the group count.

    `model` is a Hugging Face causal LM or image-text-to-text model (the probe calls it with two
    text tokens, so a vision tower keeps its separate projections). Call it before
    quantization: the fused linear is an ordinary nn.Linear to quantize, and linears whose
    weights are already quantized are left as they are.
    """
    probe = {"input_ids": torch.zeros((1, 2), dtype=torch.long), "use_cache": False}
    groups = _sibling_groups(model, probe)
    for parent, names in groups:
        members = [getattr(parent, n) for n in names]
        group = _SharedInputLinear(members)
        parent.add_module("fused_" + "_".join(names), group)
        for index, (name, member) in enumerate(zip(names, members, strict=True)):
            setattr(parent, name, _FusedMember(group, index, member.in_features, member.out_features))
    return len(groups)
