"""Exportable wrappers per task: what torch.export sees, with our caches and attention."""

from executorch_optimum.modules.causal_lm import CausalLMExportableModule

__all__ = ["CausalLMExportableModule"]
