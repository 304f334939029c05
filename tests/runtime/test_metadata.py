"""read_metadata: values as written, and TextLLMRunner's defaults for absent keys."""

import pytest
import torch

from executorch_optimum.runtime import read_metadata
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack


def _program(metadata):
    from executorch.runtime import Runtime

    exported = torch.export.export(torch.nn.Linear(4, 4), (torch.randn(1, 4),))
    return Runtime.get().load_program(export_to_executorch_with_xnnpack(exported, metadata=metadata).buffer)


def test_written_values_are_read_back():
    written = {
        "get_max_seq_len": 16,
        "get_max_context_len": 256,
        "get_eos_ids": [1, 106],
        "get_bos_id": 2,
        "get_vocab_size": 512,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": True,
        "enable_dynamic_shape": True,
        "sliding_window": 64,
    }
    metadata = read_metadata(_program(written))
    assert (metadata.max_seq_len, metadata.max_context_len) == (16, 256)
    assert metadata.eos_ids == (1, 106) and metadata.bos_id == 2 and metadata.vocab_size == 512
    assert metadata.use_kv_cache and metadata.use_sdpa_with_kv_cache and metadata.enable_dynamic_shape
    assert metadata.sliding_window == 64
    assert metadata.prefill_chunk == 16
    assert metadata.raw == written


def test_absent_keys_take_the_runner_defaults():
    metadata = read_metadata(_program({"get_max_seq_len": 8}))
    assert metadata.max_context_len == 8  # the runner falls back to get_max_seq_len
    assert metadata.eos_ids == () and metadata.bos_id is None and metadata.sliding_window is None
    assert metadata.use_kv_cache and not metadata.enable_dynamic_shape
    assert metadata.prefill_chunk == 1  # without dynamic shapes the prompt goes one token per call


def test_a_program_without_get_max_seq_len_is_refused():
    with pytest.raises(ValueError, match="no get_max_seq_len method"):
        read_metadata(_program({"get_max_context_len": 8}))
