"""Edge-dialect graph passes that make exported LLM graphs lower cleanly."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from executorch.exir.dialects._ops import ops as exir_ops
from executorch.exir.pass_base import (
    ExportedProgramPassBase,
    ExportedProgramPassResult,
    ExportPass,
    PassResult,
)
from torch.fx.passes.infra.pass_base import PassBase

_LINEAR = exir_ops.edge.aten.linear.default


class RemovePaddingIdxEmbeddingPass(ExportPass):
    """Drops the `padding_idx` argument of `aten.embedding` calls.

    `padding_idx` only changes the gradient, never the forward value, so an inference graph
    loses nothing. Keeping it breaks quantized embeddings: ExecuTorch's quant-fusion patterns
    (dequantize_affine + embedding -> quantized_decomposed.embedding_{byte,4bit}) only match the
    two-argument form, so the table's dequantize op is left in the graph and `to_executorch`
    fails with "Missing out variants: {'torchao::dequantize_affine'}".
    """

    _EMBEDDING_TARGETS = (exir_ops.edge.aten.embedding.default, torch.ops.aten.embedding.default)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        modified = False
        for node in graph_module.graph.nodes:
            if node.op != "call_function" or node.target not in self._EMBEDDING_TARGETS:
                continue
            if len(node.args) > 2 or "padding_idx" in node.kwargs:
                node.args = node.args[:2]
                node.kwargs = {k: v for k, v in node.kwargs.items() if k != "padding_idx"}
                modified = True
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)


def _last_dim_mean_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The (fake) input of `mean.dim(x, [-1], keepdim=True)` without a dtype, else None."""
    if kwargs.get("dtype") is not None or len(args) < 3 or not args[2]:
        return None
    value = args[0].meta.get("val") if isinstance(args[0], torch.fx.Node) else None
    if value is None or value.dim() < 2:
        return None
    dims = args[1] if isinstance(args[1], list | tuple) else [args[1]]
    return value if [d % value.dim() for d in dims] == [value.dim() - 1] else None


class MeanLastDimAsPoolingPass(ExportPass):
    """Rewrites `mean(x, -1, keepdim=True)` (RMSNorm's) into a form XNNPACK delegates.

    XNNPACK only takes `mean.dim` over the two innermost dims of a 4-D tensor (global
    average pooling). Left alone, every RMSNorm stays on the portable path and cuts each
    decoder layer into several delegate partitions: more per-token dispatch at run time,
    and a full XNNPACK preprocess per partition at export time. Viewing x as
    [1, rows, H, 1] and pooling over (H, 1) computes the same mean inside the delegate.
    Only one dimension may be symbolic (XNNPACK reshapes infer at most one).
    Rewritten in place (no re-trace of the whole graph: that cost ~3 % of an export).
    """

    _MEAN = exir_ops.edge.aten.mean.dim
    _VIEW = exir_ops.edge.aten.view_copy.default

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target is not self._MEAN:
                continue
            shape = self._rewritable_shape(node.args, node.kwargs)
            if shape is None:
                continue
            out_shape = [d if isinstance(d, int) else -1 for d in shape[:-1]] + [1]
            with graph.inserting_before(node):
                pooled_in = self._insert(graph, node, self._VIEW, (node.args[0], [1, -1, shape[-1], 1]))
                pooled = self._insert(graph, node, self._MEAN, (pooled_in, [2, 3], True))
                result = self._insert(graph, node, self._VIEW, (pooled, out_shape))
            node.replace_all_uses_with(result)
            graph.erase_node(node)
            modified = True
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)

    @staticmethod
    def _insert(graph: torch.fx.Graph, origin: torch.fx.Node, op, args: tuple) -> torch.fx.Node:  # noqa: ANN001
        """A call of `op` carrying `origin`'s metadata and its own fake value (as a re-trace would)."""
        new = graph.call_function(op, args)
        new.meta = dict(origin.meta)
        values = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
        new.meta["val"] = op(*values)
        return new

    @staticmethod
    def _rewritable_shape(args: tuple, kwargs: dict) -> list | None:
        value = _last_dim_mean_input(args, kwargs)
        if value is None or value.dim() > 4:
            return None
        shape = list(value.shape)
        if value.dim() == 4 and isinstance(shape[2], int) and shape[3] == 1:
            return None  # already pooling-shaped
        if not isinstance(shape[-1], int) or sum(not isinstance(d, int) for d in shape) > 1:
            return None
        return [int(d) if isinstance(d, int) else d for d in shape]


def _new_parameter(
    exported_program: torch.export.ExportedProgram, name: str, value: torch.Tensor
) -> torch.fx.Node:
    """A new fp32 parameter placeholder holding `value`, ahead of the graph's inputs."""
    from executorch.backends.transforms.utils import create_constant_placeholder
    from torch.export.graph_signature import InputKind

    graph = exported_program.graph_module.graph
    with graph.inserting_before(next(iter(graph.find_nodes(op="placeholder")))):
        return create_constant_placeholder(
            exported_program, graph, name, InputKind.PARAMETER, value.to(torch.float32)
        )


class MeanLastDimAsLinearPass(ExportedProgramPassBase):
    """Rewrites fp32 `mean(x, -1, keepdim=True)` (RMSNorm's) as `linear(x, ones(1, N) / N)`.

    XNNPACK runs a linear on any leading shape as one operator. The pooling form of
    MeanLastDimAsPoolingPass (which takes what this pass leaves: other dtypes, where 1/N
    would round badly) costs five: two reshapes, and two transposes into and out of the
    channels-last layout XNNPACK's mean wants. Two norms per layer make that 8 operators
    fewer per layer, each of which XNNPACK reshapes, sets up and runs on every call. The sum
    is in another order than the mean's; the difference is float32 rounding.
    """

    _MEAN = exir_ops.edge.aten.mean.dim

    def call(self, exported_program: torch.export.ExportedProgram) -> ExportedProgramPassResult:
        graph = exported_program.graph_module.graph
        weights: dict[int, torch.fx.Node] = {}
        modified = False
        for node in list(graph.nodes):
            size = self._reduced_size(node)
            if size is None:
                continue
            if size not in weights:
                weights[size] = _new_parameter(
                    exported_program, f"eo_mean_weight_{size}", torch.full((1, size), 1.0 / size)
                )
            with graph.inserting_before(node):
                linear = graph.call_function(_LINEAR, (node.args[0], weights[size]))
            linear.meta = dict(node.meta)
            node.replace_all_uses_with(linear)
            graph.erase_node(node)
            modified = True
        if modified:
            exported_program.graph_module.recompile()
        return ExportedProgramPassResult(exported_program, modified)

    def _reduced_size(self, node: torch.fx.Node) -> int | None:
        """N when `node` is an fp32 mean over a static last dim N with keepdim, else None."""
        if node.op != "call_function" or node.target is not self._MEAN:
            return None
        value = _last_dim_mean_input(node.args, node.kwargs)
        if value is None or value.dtype != torch.float32 or not isinstance(value.shape[-1], int):
            return None
        return int(value.shape[-1])


class ScalarAddAsLinearBiasPass(ExportedProgramPassBase):
    """Folds `linear(x, W) + c` (fp32 W without bias, constant scalar c) into `linear(x, W, c)`.

    RMSNorm adds its epsilon to the mean of squares, which MeanLastDimAsLinearPass made a
    linear: one Add operator per norm (61 per SmolLM2 token) that XNNPACK sets up and runs on
    every call, where the linear's bias does it in the same operator. The bias is added first
    rather than last; the difference is float32 rounding.
    """

    _ADD = exir_ops.edge.aten.add.Tensor

    def call(self, exported_program: torch.export.ExportedProgram) -> ExportedProgramPassResult:
        from executorch.backends.transforms.utils import (
            delete_constant_placeholder,
            get_param_tensor,
            is_param_node,
        )

        graph = exported_program.graph_module.graph
        biases: dict[tuple[int, float], torch.fx.Node] = {}
        modified = False
        for node in list(graph.nodes):
            if node.op != "call_function" or node.target is not self._ADD or node.kwargs.get("alpha", 1) != 1:
                continue
            linear = next((a for a in node.args if self._is_plain_linear(exported_program, a)), None)
            constant = next((a for a in node.args if a is not linear), None)
            if linear is None or node.meta["val"].shape != linear.meta["val"].shape:
                continue
            if any(user.op == "output" for user in node.users):
                continue  # the graph signature names its outputs
            if isinstance(constant, int | float) and not isinstance(constant, bool):
                value = torch.tensor(float(constant))
            elif isinstance(constant, torch.fx.Node) and is_param_node(exported_program, constant):
                value = get_param_tensor(exported_program, constant)
            else:
                continue
            if value is None or value.numel() != 1:
                continue
            out_features = int(linear.args[1].meta["val"].shape[0])
            key = (out_features, float(value))
            if key not in biases:
                biases[key] = _new_parameter(
                    exported_program,
                    f"eo_linear_bias_{len(biases)}",
                    torch.full((out_features,), float(value)),
                )
            linear.args = (*linear.args[:2], biases[key])
            node.replace_all_uses_with(linear)
            graph.erase_node(node)
            if isinstance(constant, torch.fx.Node) and not constant.users:
                delete_constant_placeholder(exported_program, constant)
            modified = True
        if modified:
            exported_program.graph_module.recompile()
        return ExportedProgramPassResult(exported_program, modified)

    def _is_plain_linear(self, exported_program: torch.export.ExportedProgram, node: object) -> bool:
        """An fp32 linear without bias, of a weight stored as is (not dequantized), used once."""
        from executorch.backends.transforms.utils import is_param_node

        if not isinstance(node, torch.fx.Node) or node.target is not _LINEAR or len(node.users) != 1:
            return False
        if len(node.args) > 2 and node.args[2] is not None or node.kwargs:
            return False
        weight = node.args[1]
        value = node.meta.get("val")
        return (
            isinstance(weight, torch.fx.Node)
            and is_param_node(exported_program, weight)
            and value is not None
            and value.dtype == torch.float32
        )


class InferredViewDimPass(ExportPass):
    """Spells a reshape's one symbolic output dim as -1 (e.g. [1, s, -1, 64] -> [1, -1, 9, 64]).

    Attention code reshapes with the traced sequence length (`view(*x.shape[:-1], -1, d)`)
    and unsqueezes the rotary tables on a non-trailing dim; XNNPACK refuses symbolic sizes
    in a reshape and such unsqueezes, but infers one -1. Without this every q/k/v head split
    and rotary table stays on the portable path and splits the layer's partition. Unsqueezes
    become the equivalent views.
    """

    _VIEW = exir_ops.edge.aten.view_copy.default
    _UNSQUEEZE = exir_ops.edge.aten.unsqueeze_copy.default

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        modified = False
        for node in graph_module.graph.nodes:
            if node.op != "call_function" or node.target not in (self._VIEW, self._UNSQUEEZE):
                continue
            value = node.meta.get("val")
            if value is None:
                continue
            shape = list(value.shape)
            symbolic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
            if len(symbolic) > 1 or (node.target is self._UNSQUEEZE and not symbolic):
                continue
            new_shape = [-1 if i in symbolic else int(d) for i, d in enumerate(shape)]
            if node.target is self._UNSQUEEZE or list(node.args[1]) != new_shape:
                node.target = self._VIEW
                node.args = (node.args[0], new_shape)
                modified = True
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)


class CancelPermutePairsPass(ExportPass):
    """Folds `permute(permute(x, a), b)` into one permute of x, or into x when they cancel.

    Each permute is a transpose operator XNNPACK runs (and sets up) on every call. Rotary
    applied in sequence-major layout (modules/rotary.py) leaves transformers' head transposes
    next to our attention's and cache's transposes back; this removes both of each pair.
    """

    _PERMUTE = exir_ops.edge.aten.permute_copy.default

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        for node in list(graph.nodes):
            inner = node.args[0] if node.target is self._PERMUTE else None
            if not isinstance(inner, torch.fx.Node) or inner.target is not self._PERMUTE:
                continue
            rank = len(node.args[1])
            first = [d % rank for d in inner.args[1]]
            order = [first[d % rank] for d in node.args[1]]  # out[i] = x.dim(first[second[i]])
            if order == list(range(rank)):
                node.replace_all_uses_with(inner.args[0])
                graph.erase_node(node)
            else:
                node.args = (inner.args[0], order)
            if not inner.users:
                graph.erase_node(inner)
            modified = True
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)


class MergeViewsPass(ExportPass):
    """Views of views become one view of the source; equal views of one source become one node.

    Each view left in a delegated graph is a reshape operator XNNPACK runs (and sets up) on
    every call. Projections reshape their output twice ([S, N] -> [1, S, N] -> [1, S, H, D]),
    and every layer views the same rotary tables the same way.
    """

    _VIEW = exir_ops.edge.aten.view_copy.default

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        modified = False
        seen: dict[tuple, torch.fx.Node] = {}
        for node in list(graph.nodes):
            if node.target is not self._VIEW:
                continue
            source = node.args[0]
            if isinstance(source, torch.fx.Node) and source.target is self._VIEW:
                node.args = (source.args[0], *node.args[1:])
                if not source.users:
                    graph.erase_node(source)
                modified = True
            modified |= _reuse_equal(node, (node.args[0], tuple(node.args[1])), seen)
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)


class ShareActivationQuantizationPass(ExportPass):
    """Linears that read one activation quantize it once.

    8da4w quantizes every linear's input on its own (choose_qparams, quantize, dequantize):
    q/k/v and gate/up quantize the same tensor three and two times, and XNNPACK runs a convert
    operator (and its per-call setup) for each. Equal quantization nodes of one source compute
    the same tensor, so one of each serves all the linears.
    """

    _PURE = frozenset(
        f"torchao.{op}.default" for op in ("choose_qparams_affine", "quantize_affine", "dequantize_affine")
    )

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        seen: dict[tuple, torch.fx.Node] = {}
        modified = False
        for node in list(graph.nodes):
            if node.op != "call_function" or not self._shareable(node):
                continue
            modified |= _reuse_equal(node, (node.target, _hashable(node.args), _hashable(node.kwargs)), seen)
        if modified:
            graph_module.recompile()
        return PassResult(graph_module, modified)

    def _shareable(self, node: torch.fx.Node) -> bool:
        if getattr(node.target, "__name__", None) in self._PURE:
            return True
        source = node.args[0] if node.args else None
        return (
            node.target is operator.getitem
            and getattr(getattr(source, "target", None), "__name__", None) in self._PURE
        )


def _reuse_equal(node: torch.fx.Node, key: tuple, seen: dict[tuple, torch.fx.Node]) -> bool:
    """Replaces `node` by the node seen first with the same `key` (and returns True), or
    records it as that node."""
    if key not in seen:
        seen[key] = node
        return False
    node.replace_all_uses_with(seen[key])
    node.graph.erase_node(node)
    return True


def _hashable(value: object) -> object:
    """A key for an argument tree: nodes by identity, lists as tuples, dicts as sorted items."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value


class InitializedBufferPass(PassBase):
    """Marks the placeholders whose names contain one of `patterns` as initialised buffers.

    Sets the `et_init_buffer` flag ExecuTorch's emitter reads (the program then carries the
    buffer's initial value) as ExecuTorch's `InitializedMutableBufferPass` does, but in place:
    that pass re-traces the whole graph to touch a few placeholders (~2.5 % of an export).
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        super().__init__()
        self.patterns = tuple(patterns)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        modified = False
        for node in graph_module.graph.find_nodes(op="placeholder"):
            if any(pattern in node.target for pattern in self.patterns):
                node.meta["et_init_buffer"] = True
                modified = True
        return PassResult(graph_module, modified)


def default_transform_passes() -> list[ExportPass | ExportedProgramPassBase]:
    """The passes every XNNPACK export runs on the edge graph before partitioning."""
    return [
        ShareActivationQuantizationPass(),
        RemovePaddingIdxEmbeddingPass(),
        MeanLastDimAsLinearPass(),
        ScalarAddAsLinearBiasPass(),
        MeanLastDimAsPoolingPass(),
        InferredViewDimPass(),
        CancelPermutePairsPass(),
        MergeViewsPass(),
    ]
