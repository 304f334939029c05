"""Weight quantization with torchao, in the forms ExecuTorch's XNNPACK path understands.

Linear schemes: `8da4w` / `8da8w` (int8 dynamic activations, int4 / int8 weights; XNNPACK runs
them) and `4w` / `8w` (weight-only). Embedding schemes: `4w` / `8w` (ExecuTorch's quantized
embedding kernels after quant fusion). A group size of 0 means one scale per output channel.
Every rule is checked before the first module is touched, so a bad combination costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from executorch_optimum.xnnpack.checkpoint_pages import page_out_checkpoints

LINEAR_SCHEMES = ("8da4w", "8da8w", "4w", "8w")
EMBEDDING_SCHEMES = ("4w", "8w")
WEIGHT_ONLY_LINEAR_SCHEMES = ("4w", "8w")


@dataclass(frozen=True)
class QuantizationConfig:
    """What to quantize and how; `validate()` raises a one-line ValueError on any bad choice."""

    qlinear: str | None = None
    qlinear_group_size: int = 32
    qembedding: str | None = None
    qembedding_group_size: int = 0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def enabled(self) -> bool:
        return bool(self.qlinear or self.qembedding)

    def validate(self) -> None:
        """Checks the settings on their own (no model needed)."""
        if self.qlinear is not None and self.qlinear not in LINEAR_SCHEMES:
            raise ValueError(
                f"unknown linear quantization scheme {self.qlinear!r}; choose one of {', '.join(LINEAR_SCHEMES)}"
            )
        if self.qembedding is not None and self.qembedding not in EMBEDDING_SCHEMES:
            raise ValueError(
                f"unknown embedding quantization scheme {self.qembedding!r}; "
                f"choose one of {', '.join(EMBEDDING_SCHEMES)}"
            )
        for flag, value in (
            ("qlinear_group_size", self.qlinear_group_size),
            ("qembedding_group_size", self.qembedding_group_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{flag} must be a non-negative integer (0 = per channel), got {value!r}")
            if value % 2:
                raise ValueError(f"{flag} must be even (0 = per channel), got {value}")
        if self.qlinear == "8da4w" and self.qlinear_group_size % 32:
            # XNNPACK's blockwise int4 GEMM asserts this inside lowering; say it up front.
            raise ValueError(
                f"qlinear '8da4w' needs qlinear_group_size 0 (per channel) or a multiple of 32, "
                f"got {self.qlinear_group_size}"
            )
        if self.qlinear == "8da8w" and self.qlinear_group_size != 0:
            # XNNPACK's int8-weight dynamic GEMM is per-channel only; groups fail inside lowering.
            raise ValueError(
                f"qlinear '8da8w' supports only per-channel weights (qlinear_group_size 0), "
                f"got {self.qlinear_group_size}"
            )

    def check_model(self, model: torch.nn.Module) -> None:
        """Checks that every layer to quantize can take the group size, before any is touched."""
        for name, module in model.named_modules():
            if self.qlinear and isinstance(module, torch.nn.Linear):
                _check_group(name, "in_features", module.in_features, self.qlinear_group_size, "qlinear")
            if self.qembedding and isinstance(module, torch.nn.Embedding):
                _check_group(
                    name, "embedding_dim", module.embedding_dim, self.qembedding_group_size, "qembedding"
                )


def _check_group(name: str, what: str, size: int, group_size: int, flag: str) -> None:
    if group_size and size % group_size:
        raise ValueError(
            f"{flag}_group_size {group_size} does not divide {what} {size} of layer {name!r}; "
            f"pick a divisor of {size} or 0 (per channel)"
        )


def _granularity(group_size: int):  # noqa: ANN202 (torchao granularity types)
    from torchao.quantization import PerAxis, PerGroup

    return PerAxis(0) if group_size == 0 else PerGroup(group_size)


def _linear_config(scheme: str, group_size: int):  # noqa: ANN202 (torchao config types)
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig

    weight_dtype = torch.int4 if "4w" in scheme else torch.int8
    if scheme.startswith("8da"):
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=weight_dtype, weight_granularity=_granularity(group_size)
        )
    return IntxWeightOnlyConfig(weight_dtype=weight_dtype, granularity=_granularity(group_size))


def _embedding_config(scheme: str, group_size: int):  # noqa: ANN202 (torchao config type)
    from torchao.quantization import IntxWeightOnlyConfig

    weight_dtype = torch.int4 if scheme == "4w" else torch.int8
    return IntxWeightOnlyConfig(weight_dtype=weight_dtype, granularity=_granularity(group_size))


def quantize_model_(
    model: torch.nn.Module,
    qlinear: str | None = None,
    qlinear_group_size: int = 32,
    qembedding: str | None = None,
    qembedding_group_size: int = 0,
) -> QuantizationConfig:
    """Quantizes `model` in place and returns the validated config it used.

    All validation (scheme names, group sizes, every layer's divisibility) runs first: a
    ValueError leaves the model untouched.
    """
    config = QuantizationConfig(qlinear, qlinear_group_size, qembedding, qembedding_group_size)
    config.check_model(model)
    apply_quantization_(model, config)
    return config


def apply_quantization_(model: torch.nn.Module, config: QuantizationConfig) -> None:
    """Applies an already validated config to `model` (see `quantize_model_`)."""
    if config.qembedding:
        _quantize_one_by_one(
            model, torch.nn.Embedding, _embedding_config(config.qembedding, config.qembedding_group_size)
        )
    if config.qlinear:
        _quantize_one_by_one(
            model, torch.nn.Linear, _linear_config(config.qlinear, config.qlinear_group_size)
        )


# Weights larger than this are quantized a slice of rows at a time (see `_quantize_rows_in_chunks`).
CHUNK_BYTES = 64 << 20


def _quantize_one_by_one(model: torch.nn.Module, kind: type, ao_config: object) -> None:
    """Quantizes every `kind` module of `model` one at a time, paging out the memory-mapped
    checkpoint after each (see checkpoint_pages.py), so the float checkpoint is never resident
    whole next to its quantized copy. Same tensors as one `quantize_` over the model."""
    from torchao.quantization import quantize_

    for target in [module for module in model.modules() if isinstance(module, kind)]:
        if not _quantize_rows_in_chunks(target, ao_config):
            quantize_(model, ao_config, lambda module, fqn, target=target: module is target)
        page_out_checkpoints()


def _splits_by_rows(quantized: torch.Tensor) -> bool:
    """Whether every data tensor of a torchao tensor is laid out by the weight's rows."""
    kind = type(quantized)
    names = getattr(kind, "tensor_data_names", None)
    if not names or getattr(kind, "optional_tensor_data_names", None):
        return False
    if tuple(getattr(quantized, "block_size", ()))[:1] != (1,):
        return False
    return all(getattr(quantized, name).shape[0] == quantized.shape[0] for name in names)


def _row_slice(module: torch.nn.Module, begin: int, end: int) -> torch.nn.Module:
    """A module of the same kind whose weight is rows begin:end of `module`'s (a view)."""
    if isinstance(module, torch.nn.Embedding):
        part = torch.nn.Embedding(end - begin, module.embedding_dim, device="meta")
    else:
        part = torch.nn.Linear(module.in_features, end - begin, bias=False, device="meta")
    part.weight = torch.nn.Parameter(module.weight.detach()[begin:end], requires_grad=False)
    return part


def _quantize_rows_in_chunks(module: torch.nn.Module, ao_config: object) -> bool:
    """Quantizes a large weight (an embedding table, an lm_head) CHUNK_BYTES of rows at a time.

    torchao's quantization makes float temporaries the size of the whole weight (about twice
    its size at the peak: 1.2 GB for Qwen3-0.6B's table); per slice they stay small. Every
    scheme here has one scale per row or per group within a row, so the slices' quantized
    data, scales and zero points are the rows of the whole weight's, and are concatenated
    into one tensor of torchao's type. Returns False (nothing done) for weights below the
    chunk size, a bias (a packed format may fold it in) or a layout that does not split by rows.
    """
    from torchao.quantization import quantize_

    weight = module.weight
    if getattr(module, "bias", None) is not None or weight.dim() != 2:
        return False
    rows = weight.shape[0]
    row_bytes = weight.shape[1] * weight.element_size()
    rows_per_chunk = max(1, CHUNK_BYTES // row_bytes)
    if rows <= rows_per_chunk:
        return False
    pieces = []
    for begin in range(0, rows, rows_per_chunk):
        part = _row_slice(module, begin, min(begin + rows_per_chunk, rows))
        quantize_(part, ao_config, lambda m, fqn: True)
        if not pieces and not _splits_by_rows(part.weight):
            return False
        pieces.append(part.weight)
        page_out_checkpoints()
    kind = type(pieces[0])
    data = [torch.cat([getattr(piece, name) for piece in pieces]) for name in kind.tensor_data_names]
    attributes = [getattr(pieces[0], name) for name in kind.tensor_attribute_names]
    module.weight = torch.nn.Parameter(kind(*data, *attributes), requires_grad=False)
    return True
