"""Export and metadata for the runtime tests' hand-written LMs, whose `forward(tokens [1, S],
positions [S])` returns logits and takes 1..max_seq_len tokens per call."""

from __future__ import annotations

import torch


def export_forward(module: torch.nn.Module, max_seq_len: int, example_len: int = 3) -> dict:
    """{"forward": ExportedProgram} with a dynamic sequence length (1..max_seq_len)."""
    seq = torch.export.Dim("seq", min=1, max=max_seq_len)
    example = (torch.zeros(1, example_len, dtype=torch.long), torch.arange(example_len))
    with torch.no_grad():
        return {"forward": torch.export.export(module, example, dynamic_shapes=({1: seq}, {0: seq}))}


def runner_metadata(max_seq_len: int, context: int, vocab: int, **extra: object) -> dict:
    """The constant methods the runtime and ExecuTorch's runners read, plus `extra`."""
    return {
        "get_max_seq_len": max_seq_len,
        "get_max_context_len": context,
        "enable_dynamic_shape": True,
        "get_vocab_size": vocab,
        **extra,
    }
