"""Runner metadata and config helpers shared by export and runtime."""

from executorch_optimum.utils.constant_methods import (
    BOS_ID,
    ENABLE_DYNAMIC_SHAPE,
    EOS_IDS,
    MAX_CONTEXT_LEN,
    MAX_SEQ_LEN,
    SLIDING_WINDOW,
    USE_KV_CACHE,
    USE_SDPA_WITH_KV_CACHE,
    VOCAB_SIZE,
    eos_ids_of,
    save_config_to_constant_methods,
    sliding_window_of,
)

__all__ = [
    "BOS_ID",
    "ENABLE_DYNAMIC_SHAPE",
    "EOS_IDS",
    "MAX_CONTEXT_LEN",
    "MAX_SEQ_LEN",
    "SLIDING_WINDOW",
    "USE_KV_CACHE",
    "USE_SDPA_WITH_KV_CACHE",
    "VOCAB_SIZE",
    "eos_ids_of",
    "save_config_to_constant_methods",
    "sliding_window_of",
]
