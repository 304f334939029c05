"""Exportable wrappers per task: what torch.export sees, with our caches and attention."""

from executorch_optimum.modules.causal_lm import CausalLMExportableModule
from executorch_optimum.modules.fused_projections import fuse_attention_inputs
from executorch_optimum.modules.image_text_to_text import ImageTextToTextExportableModule

__all__ = ["CausalLMExportableModule", "ImageTextToTextExportableModule", "fuse_attention_inputs"]
