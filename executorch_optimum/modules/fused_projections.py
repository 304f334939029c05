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
bytes either way (measured 0.998x), so fp32 exports keep three.

The Hugging Face model keeps its code: each member becomes a `_FusedMember` returning its
part of the group's output; the first member called with an input computes the group.
"""

from __future__ import annotations

import torch

ATTENTION_INPUTS = ("q_proj", "k_proj", "v_proj")


class _SharedInputLinear(torch.nn.Module):
    """The concatenated weights of a group, computed once per input tensor."""

    def __init__(self, members: list[torch.nn.Linear]) -> None:
        super().__init__()
        first = members[0]
        has_bias = any(m.bias is not None for m in members)
        self.sizes = [m.out_features for m in members]
        # Built on the meta device and handed the concatenation: a materialised Linear would
        # first fill a random weight as large as the group's, then copy over it (Qwen3-0.6B:
        # one more 470 MB at the export's peak).
        self.linear = torch.nn.Linear(
            first.in_features, sum(self.sizes), bias=has_bias, dtype=first.weight.dtype, device="meta"
        )
        grad = first.weight.requires_grad
        with torch.no_grad():
            self.linear.weight = torch.nn.Parameter(
                torch.cat([m.weight for m in members]), requires_grad=grad
            )
            if has_bias:
                biases = [
                    m.bias if m.bias is not None else m.weight.new_zeros(m.out_features) for m in members
                ]
                self.linear.bias = torch.nn.Parameter(torch.cat(biases), requires_grad=grad)
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


def _fusable(module: torch.nn.Module) -> bool:
    """q/k/v plain float linears of one input width and dtype."""
    members = [getattr(module, name, None) for name in ATTENTION_INPUTS]
    return (
        all(_is_float_linear(m) for m in members)
        and len({(m.in_features, m.weight.dtype) for m in members}) == 1
    )


def fuse_attention_inputs(model: torch.nn.Module) -> int:
    """Fuses the q/k/v linears of each attention in `model`'s text decoder (`get_decoder()`: a
    vision tower is left alone); returns how many were fused.

    Found by structure, not by running the model: a forward would page the whole checkpoint
    in before quantization (Qwen3-0.6B's export peak RSS grew by 1 GB). Members that do get
    different inputs (cross-attention) stay correct: the group recomputes for each new input.
    Call it before quantization: the fused linear is an ordinary nn.Linear to quantize;
    quantized linears are left alone.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    parents = [module for module in decoder.modules() if _fusable(module)]
    for parent in parents:
        members = [getattr(parent, name) for name in ATTENTION_INPUTS]
        group = _SharedInputLinear(members)
        parent.add_module("fused_qkv_proj", group)
        for index, (name, member) in enumerate(zip(ATTENTION_INPUTS, members, strict=True)):
            setattr(parent, name, _FusedMember(group, index, member.in_features, member.out_features))
    return len(parents)
