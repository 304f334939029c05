"""Runner metadata: the constant methods ExecuTorch's LLM runners read from a program.

Names and meanings follow `extension/llm/runner/constants.h` and `llm_runner_helper.cpp`
of ExecuTorch 1.5.1 (`TextLLMRunner`, `MultimodalRunner`):

- `get_max_seq_len` (required by the runner): the most tokens ONE forward call accepts; the
  runner chunks prompts by it. Overstating it makes long prompts fail inside the runner.
- `get_max_context_len`: total positions the KV cache holds (prompt + generated tokens).
- `use_kv_cache`, `use_sdpa_with_kv_cache`, `enable_dynamic_shape` (false = the runner feeds
  the prompt one token per call).
- `get_eos_ids` (plural, a list): every id that ends generation. `get_eos_id` is never read.
- `get_bos_id`, `get_vocab_size`: the stock runners take these from the tokenizer, but they
  are written for other runners and for our own runtime.
- `sliding_window`: our addition for models with sliding-window layers (not read by the
  stock runners; harmless to them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_SEQ_LEN = "get_max_seq_len"
MAX_CONTEXT_LEN = "get_max_context_len"
BOS_ID = "get_bos_id"
EOS_IDS = "get_eos_ids"
VOCAB_SIZE = "get_vocab_size"
USE_KV_CACHE = "use_kv_cache"
USE_SDPA_WITH_KV_CACHE = "use_sdpa_with_kv_cache"
ENABLE_DYNAMIC_SHAPE = "enable_dynamic_shape"
SLIDING_WINDOW = "sliding_window"

MetadataValue = int | bool | float | str | list[int] | list[float]


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return [int(v) for v in value if v is not None]
    raise ValueError(f"token ids must be an int or a list of ints, got {value!r}")


def _text_config(config: Any) -> Any:
    # Multimodal configs (e.g. Gemma3Config) keep the decoder's settings in a text sub-config.
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def sliding_window_of(config: Any) -> int | None:
    """The window of the model's sliding-attention layers, or None if it has none."""
    text = _text_config(config)
    window = getattr(text, "sliding_window", None)
    if not window or getattr(text, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(text, "layer_types", None)
    if layer_types and "sliding_attention" not in layer_types:
        return None
    return int(window)


def eos_ids_of(config: Any, generation_config: Any = None) -> list[int]:
    """Every end-of-sequence id: the generation config's first (it is what generate() stops on),
    then the model config's, without duplicates."""
    ids: list[int] = []
    for source in (generation_config, _text_config(config), config):
        if source is None:
            continue
        for token in _ids(getattr(source, "eos_token_id", None)):
            if token not in ids:
                ids.append(token)
    return ids


def _first_id(config: Any, generation_config: Any, name: str) -> int | None:
    for source in (generation_config, _text_config(config), config):
        value = getattr(source, name, None) if source is not None else None
        ids = _ids(value)
        if ids:
            return ids[0]
    return None


def save_config_to_constant_methods(
    config: Any, generation_config: Any = None, **overrides: MetadataValue | None
) -> dict[str, MetadataValue]:
    """Builds the runner metadata for a model from its (transformers) config.

    Defaults: the context is `max_position_embeddings`, one call may take the whole context,
    KV cache on, dynamic shapes on, SDPA-with-cache off. The exportable module passes what it
    actually built as `overrides` (e.g. `get_max_seq_len=128`); an override of None removes the
    key. Inconsistent values raise ValueError.
    """
    text = _text_config(config)
    metadata: dict[str, MetadataValue] = {}
    vocab_size = getattr(text, "vocab_size", None)
    if vocab_size is not None:
        metadata[VOCAB_SIZE] = int(vocab_size)
    context = getattr(text, "max_position_embeddings", None)
    if context is not None:
        metadata[MAX_CONTEXT_LEN] = int(context)
        metadata[MAX_SEQ_LEN] = int(context)
    bos = _first_id(config, generation_config, "bos_token_id")
    if bos is not None:
        metadata[BOS_ID] = bos
    eos = eos_ids_of(config, generation_config)
    if eos:
        metadata[EOS_IDS] = eos
    metadata[USE_KV_CACHE] = True
    metadata[USE_SDPA_WITH_KV_CACHE] = False
    metadata[ENABLE_DYNAMIC_SHAPE] = True
    window = sliding_window_of(config)
    if window is not None:
        metadata[SLIDING_WINDOW] = window

    for key, value in overrides.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = _ids(value) if key == EOS_IDS else value
    if MAX_SEQ_LEN not in overrides and isinstance(overrides.get(MAX_CONTEXT_LEN), int):
        # A smaller cache also bounds what one call can take.
        metadata[MAX_SEQ_LEN] = min(int(metadata.get(MAX_SEQ_LEN, 1 << 62)), overrides[MAX_CONTEXT_LEN])
    _check(metadata)
    return metadata


def _check(metadata: dict[str, MetadataValue]) -> None:
    for key in (MAX_SEQ_LEN, MAX_CONTEXT_LEN, VOCAB_SIZE, SLIDING_WINDOW):
        value = metadata.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if MAX_SEQ_LEN not in metadata:
        raise ValueError(
            f"{MAX_SEQ_LEN} is required by ExecuTorch's runners: the config has no "
            "max_position_embeddings, so pass it explicitly"
        )
    seq, context = metadata[MAX_SEQ_LEN], metadata.get(MAX_CONTEXT_LEN)
    if context is not None and seq > context:
        raise ValueError(
            f"{MAX_SEQ_LEN} ({seq}) exceeds {MAX_CONTEXT_LEN} ({context}): one call cannot "
            "take more tokens than the cache holds"
        )
    vocab = metadata.get(VOCAB_SIZE)
    for key in (BOS_ID,):
        token = metadata.get(key)
        if token is not None and vocab is not None and not 0 <= token < vocab:
            raise ValueError(f"{key} {token} is outside the vocabulary [0, {vocab})")
    for token in metadata.get(EOS_IDS, []):
        if vocab is not None and not 0 <= token < vocab:
            raise ValueError(f"{EOS_IDS} contains {token}, outside the vocabulary [0, {vocab})")
