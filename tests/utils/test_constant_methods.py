"""save_config_to_constant_methods against real transformers configs, and through a .pte."""

import pytest
import torch
import transformers
from executorch.runtime import Runtime

from executorch_optimum.utils import save_config_to_constant_methods
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack


def _llama(**kwargs) -> transformers.LlamaConfig:
    base = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.LlamaConfig(**{**base, **kwargs})


def _gemma3(**kwargs) -> transformers.Gemma3TextConfig:
    base = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=16,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
    )
    return transformers.Gemma3TextConfig(**{**base, **kwargs})


def test_llama_defaults_come_from_the_config():
    config = _llama()
    metadata = save_config_to_constant_methods(config)
    assert metadata == {
        "get_vocab_size": config.vocab_size,
        "get_max_context_len": config.max_position_embeddings,
        "get_max_seq_len": config.max_position_embeddings,
        "get_bos_id": config.bos_token_id,
        "get_eos_ids": [config.eos_token_id],
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": False,
        "enable_dynamic_shape": True,
    }


def test_generation_config_eos_ids_come_first_and_merge_with_the_model_config():
    config = _gemma3()
    generation = transformers.GenerationConfig(bos_token_id=2, eos_token_id=[106, 1])
    metadata = save_config_to_constant_methods(config, generation)
    assert metadata["get_eos_ids"] == [106, 1]  # 1 from the model config is not repeated
    assert metadata["get_bos_id"] == generation.bos_token_id
    config_only = save_config_to_constant_methods(_llama(eos_token_id=[2, 5]))
    assert config_only["get_eos_ids"] == [2, 5]


def test_sliding_window_only_when_the_model_has_sliding_layers():
    assert save_config_to_constant_methods(_gemma3())["sliding_window"] == 16
    all_full = _gemma3(layer_types=["full_attention"] * 4)
    assert "sliding_window" not in save_config_to_constant_methods(all_full)
    qwen3 = transformers.Qwen3Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=8,
        use_sliding_window=False,
    )
    assert "sliding_window" not in save_config_to_constant_methods(qwen3)
    mistral = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, sliding_window=24
    )
    assert save_config_to_constant_methods(mistral)["sliding_window"] == 24
    assert "sliding_window" not in save_config_to_constant_methods(_llama())


def test_multimodal_config_reads_its_text_config():
    text = _gemma3()
    config = transformers.Gemma3Config(text_config=text.to_dict())
    metadata = save_config_to_constant_methods(config)
    assert metadata["get_vocab_size"] == text.vocab_size
    assert metadata["get_max_context_len"] == text.max_position_embeddings
    assert metadata["sliding_window"] == text.sliding_window


def test_overrides_win_and_a_smaller_context_bounds_the_per_call_maximum():
    metadata = save_config_to_constant_methods(_llama(), get_max_context_len=64, use_sdpa_with_kv_cache=True)
    assert metadata["get_max_context_len"] == 64
    assert metadata["get_max_seq_len"] == 64  # one call cannot exceed the cache
    assert metadata["use_sdpa_with_kv_cache"] is True
    metadata = save_config_to_constant_methods(
        _llama(), get_max_seq_len=8, get_max_context_len=64, get_bos_id=None, extra_flag=3
    )
    assert (metadata["get_max_seq_len"], metadata["get_max_context_len"]) == (8, 64)
    assert "get_bos_id" not in metadata and metadata["extra_flag"] == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"get_max_seq_len": 65, "get_max_context_len": 64},
            r"get_max_seq_len \(65\) exceeds get_max_context_len",
        ),
        ({"get_max_seq_len": 0}, "get_max_seq_len must be a positive integer"),
        ({"get_eos_ids": [2, 96]}, r"get_eos_ids contains 96, outside the vocabulary \[0, 96\)"),
        ({"get_bos_id": -1}, "get_bos_id -1 is outside the vocabulary"),
    ],
)
def test_inconsistent_metadata_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        save_config_to_constant_methods(_llama(), **overrides)


def test_metadata_round_trips_through_a_program():
    metadata = save_config_to_constant_methods(
        _gemma3(),
        transformers.GenerationConfig(eos_token_id=[1, 106]),
        get_max_seq_len=32,
        get_max_context_len=128,
    )
    exported = torch.export.export(torch.nn.Linear(4, 4), (torch.randn(1, 4),))
    program = Runtime.get().load_program(
        export_to_executorch_with_xnnpack(exported, metadata=metadata).buffer
    )
    for name, value in metadata.items():
        assert list(program.load_method(name).execute([])) == (value if isinstance(value, list) else [value])
