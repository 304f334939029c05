"""One linear for an attention's q/k/v projections, for programs on our attention kernels.

A decode step runs each linear as its own XNNPACK operator: its own dispatch to the
threadpool, whose worker signals the end of every share it runs. q, k and v read one
tensor, so one wider linear computes all three with one dispatch instead of three. The
result is unchanged: every output row keeps its weights (and, quantized, its groups and
scales), and the members' outputs are the fused output's split.

The export pipeline fuses only quantized exports with `--native_kernels`. With our kernels
the three outputs go straight into our ops (`eo::rope_kv_update`, `eo::rope_ring_sdpa`), so
the split, which runs on the portable path (XNNPACK's partitioner refuses splits of a dynamic
sequence length), sits where the layer's XNNPACK partition ends anyway; on the stock path the
rotary operators after it would be cut into one more partition per layer, and gate/up stay
apart because their split would sit inside the MLP's partition. fp32 decode streams the same
bytes either way, and the fused fp32 copy raised export peak RSS by a third.

The Hugging Face model keeps its code: each member becomes a `_FusedMember` returning its
part of the group's output; the first member called with an input computes the group. A
group is found by watching one short eager forward, so members really read one tensor.
"""

from __future__ import annotations

from collections import defaultdict

import torch

ATTENTION_INPUTS = ("q_proj", "k_proj", "v_proj")


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
                self.linear.bias.copy_(
                    torch.cat(
                        [
                            m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                            for m in members
                        ]
                    )
                )
        self._input: torch.Tensor | None = None
        self._outputs: tuple[torch.Tensor, ...] = ()
        self._taken: list[bool] = []

    def member_output(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self._input is not x or self._taken[index]:
            self._input, self._outputs = x, torch.split(self.linear(x), self.sizes, dim=-1)
            self._taken = [False] * len(self.sizes)
        self._taken[index] = True
        output = self._outputs[index]
        if all(self._taken):  # drop the references: the next forward starts afresh
            self._input, self._outputs, self._taken = None, (), []
        return output


class _FusedMember(torch.nn.Module):
    """Stands where a member linear was; its output is the group's part."""

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


def _attention_groups(model: torch.nn.Module, probe: dict) -> list[torch.nn.Module]:
    """Parents whose q/k/v linears each read one same tensor once in `model(**probe)`."""
    seen: dict[str, list[torch.Tensor]] = defaultdict(list)  # held, so no id() is reused
    linears = {
        n: m
        for n, m in model.named_modules()
        if n.rpartition(".")[2] in ATTENTION_INPUTS and _is_float_linear(m)
    }
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
    parents = []
    for parent_name in sorted({n.rpartition(".")[0] for n in linears}):
        calls = [seen.get(f"{parent_name}.{name}", []) for name in ATTENTION_INPUTS]
        if all(len(c) == 1 for c in calls) and len({id(c[0]) for c in calls}) == 1:
            parents.append(model.get_submodule(parent_name))
    return parents


def fuse_attention_inputs(model: torch.nn.Module) -> int:
    """Fuses each attention's q/k/v linears that read one tensor; returns how many were fused.

    `model` is a Hugging Face causal LM or image-text-to-text model (the probe calls it with
    two text tokens, so a vision tower is never fused). Call it before quantization: the
    fused linear is an ordinary nn.Linear to quantize; quantized linears are left alone.
    """
    probe = {"input_ids": torch.zeros((1, 2), dtype=torch.long), "use_cache": False}
    parents = _attention_groups(model, probe)
    for parent in parents:
        members = [getattr(parent, name) for name in ATTENTION_INPUTS]
        group = _SharedInputLinear(members)
        parent.add_module("fused_qkv_proj", group)
        for index, (name, member) in enumerate(zip(ATTENTION_INPUTS, members, strict=True)):
            setattr(parent, name, _FusedMember(group, index, member.in_features, member.out_features))
    return len(parents)
