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


class CachedTinyLm(torch.nn.Module):
    """Embedding, a mutable per-position cache and two linears (XNNPACK takes the linears):
    the smallest program with the runner's forward(tokens, positions) and a cache."""

    def __init__(self, vocab: int = 12, hidden: int = 32, context: int = 24, max_seq_len: int = 4) -> None:
        super().__init__()
        self.vocab, self.context, self.max_seq_len = vocab, context, max_seq_len
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.mix = torch.nn.Linear(2 * hidden, hidden)
        self.head = torch.nn.Linear(hidden, vocab)
        self.register_buffer("cache", torch.zeros(context, hidden))

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens[0])
        self.cache.index_copy_(0, positions, x)
        context = self.cache.mean(0, keepdim=True).expand_as(x)
        return self.head(torch.relu(self.mix(torch.cat([x, context], -1))))[None]

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        return export_forward(self, self.max_seq_len)

    def metadata(self) -> dict:
        return runner_metadata(self.max_seq_len, self.context, self.vocab, use_kv_cache=True)
