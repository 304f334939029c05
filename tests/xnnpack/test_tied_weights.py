"""Shared weights stored once: a smaller .pte whose every name resolves to the same bytes.

References: the same lowering with `dedupe_weights=False` (ExecuTorch's own serialization),
read back with ExecuTorch's deserializer and run in its runtime, and the eager model.
"""

from __future__ import annotations

import copy

import pytest
import torch
from executorch.exir._serialize._program import deserialize_pte_binary
from executorch.extension.pybindings.portable_lib import (
    _load_for_executorch,
    _load_for_executorch_from_buffer,
)

from executorch_optimum.modules import CausalLMExportableModule
from executorch_optimum.xnnpack import QuantizationConfig, export_to_executorch_with_xnnpack
from executorch_optimum.xnnpack.spill import blob_file
from executorch_optimum.xnnpack.tied_weights import (
    find_shared_blobs,
    keys_stored_in_constants,
    store_shared_weights_once,
)
from tests.support.tiny_models import tiny_model


class TiedHead(torch.nn.Module):
    """Embedding -> linear -> lm_head that reuses the embedding matrix (as SmolLM2 does)."""

    def __init__(self, vocab: int = 1000, dim: int = 64, tied: bool = True) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.mix = torch.nn.Linear(dim, dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mix(self.embed(tokens))))


def _lower(model: torch.nn.Module, tokens: torch.Tensor, **options: object) -> bytes:
    return export_to_executorch_with_xnnpack(torch.export.export(model, (tokens,)), **options).buffer


def _resolved(pte: bytes) -> tuple[list[bytes], dict[str, bytes], object]:
    """What a runtime reads: constants by index, named blobs by key, the methods."""
    restored = deserialize_pte_binary(pte)
    constants = [buffer.storage for buffer in restored.program.constant_buffer]
    named = restored.named_data
    blobs = {key: bytes(named.buffers[entry.buffer_index]) for key, entry in named.pte_data.items()}
    return constants, blobs, restored.program.execution_plan


def test_tied_embedding_is_stored_once_and_every_name_reads_the_same_bytes():
    torch.manual_seed(0)
    model = TiedHead().eval()
    tokens = torch.randint(0, 1000, (1, 7))
    twice = _lower(model, tokens, dedupe_weights=False)
    once = _lower(model, tokens)
    weight_bytes = model.embed.weight.numel() * 4
    saved = len(twice) - len(once)
    assert weight_bytes <= saved < weight_bytes + 4096  # the weight, and at most padding besides
    assert _resolved(once) == _resolved(twice)
    assert len(keys_stored_in_constants(once)) == 1 and keys_stored_in_constants(twice) == []


def test_runtime_computes_the_same_from_buffer_and_from_a_mapped_file(tmp_path):
    torch.manual_seed(1)
    model = TiedHead().eval()
    tokens = torch.randint(0, 1000, (1, 5))
    twice = _lower(model, tokens, dedupe_weights=False)
    once = _lower(model, tokens)
    path = tmp_path / "once.pte"
    path.write_bytes(once)
    want = _load_for_executorch_from_buffer(twice).forward((tokens,))[0]
    from_buffer = _load_for_executorch_from_buffer(once).forward((tokens,))[0]
    from_file = _load_for_executorch(str(path)).forward((tokens,))[0]
    assert torch.equal(from_buffer, want) and torch.equal(from_file, want)
    torch.testing.assert_close(from_file, model(tokens), rtol=1e-4, atol=1e-5)


def test_untied_weights_leave_the_program_unchanged():
    torch.manual_seed(2)
    model = TiedHead(tied=False).eval()
    tokens = torch.randint(0, 1000, (1, 3))
    assert _lower(model, tokens) == _lower(model, tokens, dedupe_weights=False)


@pytest.mark.parametrize("qlinear", [None, "8da4w"])
def test_tied_causal_lm_runs_like_the_program_stored_twice(qlinear):
    model = tiny_model("llama", vocab_size=512)  # tied; a 192 KB embedding
    quantize = QuantizationConfig(qlinear=qlinear) if qlinear else None

    def lower(**options):
        module = CausalLMExportableModule(copy.deepcopy(model), max_seq_len=4, max_context_len=16)
        return export_to_executorch_with_xnnpack(module, quantize=quantize, **options).buffer

    twice, once = lower(dedupe_weights=False), lower()
    embedding_bytes = model.get_input_embeddings().weight.numel() * 4
    if qlinear:  # the lm_head is 4-bit in XNNPACK, the embedding fp32: nothing in common
        assert once == twice
        return
    assert len(twice) - len(once) >= embedding_bytes
    tokens = torch.tensor([[1, 7, 300, 42]])
    positions = torch.arange(4)
    outputs = [_load_for_executorch_from_buffer(pte).forward((tokens, positions))[0] for pte in (twice, once)]
    assert torch.equal(outputs[0], outputs[1])


def test_only_equal_aligned_blobs_are_shared(tmp_path):
    from executorch.exir._serialize.data_serializer import DataEntry
    from executorch.exir.schema import Buffer

    weight = torch.randn(128, 128).numpy().tobytes()
    other = torch.randn(128, 128).numpy().tobytes()
    constants = [Buffer(storage=b""), Buffer(storage=other), Buffer(storage=weight)]
    blobs = [blob_file(weight, tmp_path), other[:-4] + b"\0\0\0\0", weight]
    entries = {
        "spilled": DataEntry(buffer_index=0, alignment=16, tensor_layout=None),
        "same_size_other_bytes": DataEntry(buffer_index=1, alignment=16, tensor_layout=None),
        "needs_64": DataEntry(buffer_index=2, alignment=64, tensor_layout=None),
    }
    shared = find_shared_blobs(constants, blobs, entries, alignment=16, min_bytes=1)
    assert [(blob.key, blob.constant_index, blob.size) for blob in shared] == [("spilled", 2, len(weight))]
    assert find_shared_blobs(constants, blobs, entries, alignment=16, min_bytes=len(weight) + 1) == []


def test_serialization_is_restored_after_the_context():
    from executorch.exir._serialize import _program as serializer
    from executorch.exir.program import _program as program_manager

    before = (program_manager.serialize_for_executorch, serializer._program_to_flatbuffer)
    with pytest.raises(RuntimeError), store_shared_weights_once():
        raise RuntimeError("lowering failed")
    assert (program_manager.serialize_for_executorch, serializer._program_to_flatbuffer) == before
