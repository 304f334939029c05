"""Benchmark of our exporter on the model zoo: export cost, .pte size, ExecuTorch runtime
speed, the eager transformers baseline and a memory-bandwidth roofline.

One module per job: `zoo` (model names), `variants`, `workdir` (cached checkpoints and
exports), `measure` (child-process wall/CPU/peak RSS), `exporters` (the exporter
abstraction), `runtime_speed` (generic over any LLM .pte), `eager_speed`, `roofline`,
`stats`, `compare` (ours/theirs ratios), `results` (JSON + Markdown), `plot`, `runner`
(the pipeline) and `cli` (`bazel run //tools:benchmark`).
"""

from executorch_optimum.benchmark.errors import BenchmarkError

__all__ = ["BenchmarkError"]
