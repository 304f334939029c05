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


class PositionAveragingLm(torch.nn.Module):
    """Each token's embedding plus the mean of the cache rows up to its position: history
    matters, so a runner that feeds wrong positions or chunks gives other tokens. Logits
    outside `allowed` (when given) are pushed far down, e.g. to keep generated text printable."""

    def __init__(
        self,
        vocab: int,
        context: int,
        max_seq_len: int,
        hidden: int = 32,
        allowed: list[int] | None = None,
        example_len: int = 3,
        extra_metadata: dict | None = None,
    ) -> None:
        super().__init__()
        self.vocab, self.context, self.max_seq_len = vocab, context, max_seq_len
        self.example_len, self.extra_metadata = example_len, extra_metadata or {}
        self.embed = torch.nn.Embedding(vocab, hidden)
        self.pos = torch.nn.Embedding(context, hidden)
        self.head = torch.nn.Linear(hidden, vocab)
        self.register_buffer("k_cache", torch.zeros(context, hidden))
        bias = None
        if allowed is not None:
            bias = torch.full((vocab,), -1e4)
            bias[allowed] = 0.0
        self.register_buffer("bias", bias)

    def forward(self, tokens: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens[0]) + self.pos(cache_position)
        self.k_cache.index_copy_(0, cache_position, x)
        visible = torch.arange(self.context)[None, :] <= cache_position[:, None]
        summed = torch.where(visible[:, :, None], self.k_cache[None], torch.zeros(())).sum(1)
        logits = self.head(torch.tanh(x + summed / visible.sum(-1, keepdim=True)))
        return (logits if self.bias is None else logits + self.bias)[None]

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        return export_forward(self, self.max_seq_len, example_len=self.example_len)

    def metadata(self) -> dict:
        return runner_metadata(self.max_seq_len, self.context, self.vocab, **self.extra_metadata)
