"""Export variants by name: fp32 and quantized schemes, as our exporter's options."""

from __future__ import annotations

from dataclasses import dataclass

from executorch_optimum.benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class Variant:
    """A named export configuration (what `--qlinear/--qembedding` our exporter gets)."""

    name: str
    qlinear: str | None = None
    qlinear_group_size: int = 32
    qembedding: str | None = None
    qembedding_group_size: int = 0

    def describe(self) -> str:
        if not self.qlinear and not self.qembedding:
            return "float32 weights and activations"
        parts = []
        if self.qlinear:
            group = f"group {self.qlinear_group_size}" if self.qlinear_group_size else "per channel"
            parts.append(f"--qlinear {self.qlinear} ({group})")
        if self.qembedding:
            group = f"group {self.qembedding_group_size}" if self.qembedding_group_size else "per channel"
            parts.append(f"--qembedding {self.qembedding} ({group})")
        return ", ".join(parts)


VARIANTS: dict[str, Variant] = {
    "fp32": Variant("fp32"),
    "8da4w": Variant("8da4w", qlinear="8da4w", qembedding="8w"),
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise BenchmarkError(f"unknown variant '{name}' (variants: {', '.join(VARIANTS)})")
    return VARIANTS[name]


def parse_variant_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BenchmarkError(f"--variants is empty (variants: {', '.join(VARIANTS)})")
    for name in names:
        get_variant(name)
    return list(dict.fromkeys(names))
