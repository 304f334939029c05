"""Load a .pte, prefill and decode in the ExecuTorch runtime, and measure tokens/s."""

from executorch_optimum.runtime.generator import (
    GenerationResult,
    GenerationStats,
    Generator,
    load_executorch_op_libraries,
)
from executorch_optimum.runtime.metadata import ProgramMetadata, read_metadata
from executorch_optimum.runtime.sampling import sample_next_token
from executorch_optimum.runtime.threads import configure_threads

__all__ = [
    "GenerationResult",
    "GenerationStats",
    "Generator",
    "configure_threads",
    "ProgramMetadata",
    "load_executorch_op_libraries",
    "read_metadata",
    "sample_next_token",
]
