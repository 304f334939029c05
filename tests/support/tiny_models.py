"""Small random-initialised models of real architectures, for parity tests.

Each entry keeps what makes its architecture different (GQA ratio, q/k norm, tied
embeddings, softcapping, sliding layers, two RoPE bases, attention scalar) at a size that
exports in seconds. Weights come from a fixed seed: no hub, no files.
"""

from __future__ import annotations

import torch
import transformers

_COMMON = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

TINY_CONFIGS: dict[str, tuple[str, dict]] = {
    # SmolLM2 shape: tied embeddings, 3:1 grouped-query attention.
    "llama": (
        "LlamaConfig",
        {"num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 2, "hidden_size": 96}
        | {"tie_word_embeddings": True},
    ),
    "qwen2": ("Qwen2Config", {"num_hidden_layers": 2, "num_key_value_heads": 2, "use_sliding_window": False}),
    "qwen3": ("Qwen3Config", {"num_hidden_layers": 2, "num_key_value_heads": 2, "head_dim": 32}),
    "gemma": ("GemmaConfig", {"num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 32}),
    "gemma2": (
        "Gemma2Config",
        {"num_hidden_layers": 4, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 8}
        | {"query_pre_attn_scalar": 24, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
    ),
    "gemma3": (
        "Gemma3TextConfig",
        {"num_hidden_layers": 6, "num_key_value_heads": 1, "head_dim": 32, "sliding_window": 8}
        | {"query_pre_attn_scalar": 24, "sliding_window_pattern": 6},
    ),
    "mistral": ("MistralConfig", {"num_hidden_layers": 2, "num_key_value_heads": 2, "sliding_window": 8}),
    "phi3": ("Phi3Config", {"num_hidden_layers": 2, "num_key_value_heads": 2, "sliding_window": None}),
}

_MODEL_CLASSES = {"Gemma3TextConfig": "Gemma3ForCausalLM"}


def tiny_config(arch: str, **overrides: object) -> transformers.PretrainedConfig:
    class_name, kwargs = TINY_CONFIGS[arch]
    return getattr(transformers, class_name)(**(_COMMON | kwargs | overrides))


def tiny_model(arch: str, seed: int = 0, **overrides: object) -> transformers.PreTrainedModel:
    """A random-initialised causal LM of `arch`, in eval mode, fp32."""
    config = tiny_config(arch, **overrides)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model_class = _MODEL_CLASSES.get(type(config).__name__)
    if model_class is None:
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    else:
        model = getattr(transformers, model_class)(config)
    return model.eval()


def randomise_head_norms_(model: transformers.PreTrainedModel) -> None:
    """Random q_norm / k_norm weights (initialisation leaves them constant, which would hide a
    norm applied to the wrong heads)."""
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                norm.weight.copy_(torch.rand(norm.weight.shape) * 1.5 - 0.5)


def linears_after_lowering(model: torch.nn.Module) -> int:
    """The `aten.linear` ops an fp32 model lowers to: its Linear layers, plus one per RMSNorm
    (MeanLastDimAsLinearPass turns each norm's mean into a linear)."""
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    return linears + sum(type(m).__name__.endswith("RMSNorm") for m in model.modules())
