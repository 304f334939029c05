"""Reads the runner metadata (constant methods) of a loaded program, with the runners' defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Names as ExecuTorch 1.5.1's extension/llm/runner/constants.h spells them (kept here so the
# runtime depends on nothing but executorch and torch).
MAX_SEQ_LEN = "get_max_seq_len"
MAX_CONTEXT_LEN = "get_max_context_len"
BOS_ID = "get_bos_id"
EOS_IDS = "get_eos_ids"
VOCAB_SIZE = "get_vocab_size"
USE_KV_CACHE = "use_kv_cache"
USE_SDPA_WITH_KV_CACHE = "use_sdpa_with_kv_cache"
ENABLE_DYNAMIC_SHAPE = "enable_dynamic_shape"
SLIDING_WINDOW = "sliding_window"
KNOWN_KEYS = (
    MAX_SEQ_LEN,
    MAX_CONTEXT_LEN,
    BOS_ID,
    EOS_IDS,
    VOCAB_SIZE,
    USE_KV_CACHE,
    USE_SDPA_WITH_KV_CACHE,
    ENABLE_DYNAMIC_SHAPE,
    SLIDING_WINDOW,
)


@dataclass(frozen=True)
class ProgramMetadata:
    """The program's runner metadata; absent keys take TextLLMRunner's defaults."""

    max_seq_len: int
    max_context_len: int
    eos_ids: tuple[int, ...] = ()
    bos_id: int | None = None
    vocab_size: int | None = None
    use_kv_cache: bool = True
    use_sdpa_with_kv_cache: bool = False
    enable_dynamic_shape: bool = False
    sliding_window: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def prefill_chunk(self) -> int:
        """Tokens per prefill call: the runner feeds one at a time without dynamic shapes."""
        return self.max_seq_len if self.enable_dynamic_shape else 1


def _scalar(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def read_metadata(program: Any) -> ProgramMetadata:
    """Executes every known constant method of `program` (an executorch.runtime.Program)."""
    names = program.method_names
    if MAX_SEQ_LEN not in names:
        raise ValueError(f"the program has no {MAX_SEQ_LEN} method, which ExecuTorch's LLM runners require")
    raw = {key: list(program.load_method(key).execute([])) for key in KNOWN_KEYS if key in names}
    scalars = {key: _scalar(value) for key, value in raw.items() if key != EOS_IDS}
    max_seq_len = int(scalars[MAX_SEQ_LEN])
    return ProgramMetadata(
        max_seq_len=max_seq_len,
        max_context_len=int(scalars.get(MAX_CONTEXT_LEN, max_seq_len)),
        eos_ids=tuple(int(v) for v in raw.get(EOS_IDS, [])),
        bos_id=int(scalars[BOS_ID]) if BOS_ID in scalars else None,
        vocab_size=int(scalars[VOCAB_SIZE]) if VOCAB_SIZE in scalars else None,
        use_kv_cache=bool(scalars.get(USE_KV_CACHE, True)),
        use_sdpa_with_kv_cache=bool(scalars.get(USE_SDPA_WITH_KV_CACHE, False)),
        enable_dynamic_shape=bool(scalars.get(ENABLE_DYNAMIC_SHAPE, False)),
        sliding_window=int(scalars[SLIDING_WINDOW]) if SLIDING_WINDOW in scalars else None,
        raw={key: (value if key == EOS_IDS else _scalar(value)) for key, value in raw.items()},
    )
