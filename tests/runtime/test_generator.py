"""Generator on a tiny model with a position-indexed cache, against the eager model's decode."""

import pytest
import torch

from executorch_optimum.runtime import Generator, greedy_token, sample_next_token
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.support.tiny_programs import export_forward, runner_metadata

VOCAB, HIDDEN, CONTEXT, MAX_SEQ_LEN = 40, 32, 48, 5


class TinyCachedLm(torch.nn.Module):
    """forward(tokens [1, S], cache_position [S]) -> logits.

    Each position's state is written into a mutable cache at its index and every query averages
    the cache over the positions before it, so logits depend on the whole history: a prefill
    split into chunks (or a decode step at the wrong position) gives different numbers.
    """

    def __init__(self, last_logits_only: bool = False) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.pos = torch.nn.Embedding(CONTEXT, HIDDEN)
        self.mix = torch.nn.Linear(2 * HIDDEN, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, VOCAB)
        self.last_logits_only = last_logits_only
        self.register_buffer("k_cache", torch.zeros(CONTEXT, HIDDEN))

    def forward(self, tokens: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens[0]) + self.pos(cache_position)  # [S, H]
        self.k_cache.index_copy_(0, cache_position, x)
        visible = torch.arange(CONTEXT)[None, :] <= cache_position[:, None]  # [S, C]
        summed = torch.where(visible[:, :, None], self.k_cache[None], torch.zeros(())).sum(1)
        context = summed / visible.sum(-1, keepdim=True)
        logits = self.head(torch.tanh(self.mix(torch.cat([x, context], -1))))[None]  # [1, S, V]
        return logits[:, -1:, :] if self.last_logits_only else logits

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        return export_forward(self, MAX_SEQ_LEN)

    def metadata(self) -> dict:
        return runner_metadata(MAX_SEQ_LEN, CONTEXT, VOCAB, use_kv_cache=True, get_eos_ids=[VOCAB - 1])


def _eager_generate(model, prompt, steps, temperature=0.0, top_p=1.0, seed=0):
    """Reference loop: the whole prompt in ONE eager call, then one token per call."""
    model.k_cache.zero_()
    generator = torch.Generator().manual_seed(seed)
    tokens, all_logits = [], []
    with torch.no_grad():
        logits = model(torch.tensor([prompt]), torch.arange(len(prompt)))[0, -1]
        for step in range(steps):
            if step:
                position = len(prompt) + step - 1  # where the previous token goes
                logits = model(torch.tensor([[tokens[-1]]]), torch.tensor([position]))[0, -1]
            all_logits.append(logits)
            tokens.append(sample_next_token(logits, temperature, top_p, generator))
    return tokens, all_logits


def _export(tmp_path, model):
    path = tmp_path / "tiny.pte"
    path.write_bytes(export_to_executorch_with_xnnpack(model).buffer)
    return Generator(path)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyCachedLm().eval()


@pytest.fixture(scope="module")
def pte(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("pte") / "tiny.pte"
    path.write_bytes(export_to_executorch_with_xnnpack(model).buffer)
    return path


PROMPT = [3, 17, 8, 25, 1, 9, 30, 12, 4, 22, 7, 15, 2]  # 13 tokens: chunks of 5, 5, 3


@pytest.mark.parametrize("last_logits_only", [False, True])
def test_greedy_matches_eager_through_chunked_prefill_and_decode(tmp_path, model, last_logits_only):
    model.last_logits_only = last_logits_only
    generator = _export(tmp_path, model)
    assert generator.metadata.max_seq_len == MAX_SEQ_LEN and generator.metadata.max_context_len == CONTEXT

    result = generator.generate(PROMPT, max_new_tokens=20, eos_ids=[], record_logits=True)
    model.last_logits_only = False
    want_tokens, want_logits = _eager_generate(model, PROMPT, 20)

    assert result.tokens == want_tokens
    assert result.stop_reason == "max_new_tokens"
    for got, want in zip(result.logits, want_logits, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # 3 prefill calls (5 + 5 + 3 tokens) then one call per further token.
    assert result.stats.forward_calls == 3 + 19
    assert result.stats.prompt_tokens == len(PROMPT) and result.stats.generated_tokens == 20
    assert result.stats.prefill_tokens_per_s > 0 and result.stats.decode_tokens_per_s > 0
    assert 0 < result.stats.time_to_first_token_s <= result.stats.prefill_s + result.stats.decode_s + 1


def test_a_second_generate_starts_from_an_empty_cache(pte, model):
    generator = Generator(pte)
    first = generator.generate(PROMPT, max_new_tokens=6, eos_ids=[])
    generator.generate([5, 6, 7, 8, 9, 10, 11], max_new_tokens=6, eos_ids=[])
    again = generator.generate(PROMPT, max_new_tokens=6, eos_ids=[])
    assert again.tokens == first.tokens == _eager_generate(model, PROMPT, 6)[0]


def test_stops_on_eos(pte, model):
    generator = Generator(pte)
    reference, _ = _eager_generate(model, PROMPT, 10)
    eos = reference[4]
    result = generator.generate(PROMPT, max_new_tokens=10, eos_ids=[eos])
    assert result.tokens == reference[: reference.index(eos) + 1]
    assert result.stop_reason == "eos"

    # The program's own get_eos_ids is the default stop set.
    assert generator.metadata.eos_ids == (VOCAB - 1,)
    reference_with_eos, _ = _eager_generate(model, PROMPT, 30)
    result = generator.generate(PROMPT, max_new_tokens=30)
    if VOCAB - 1 in reference_with_eos:
        assert result.tokens == reference_with_eos[: reference_with_eos.index(VOCAB - 1) + 1]
    else:
        assert result.tokens == reference_with_eos


def test_generation_stops_when_the_context_is_full(pte, model):
    generator = Generator(pte)
    # Positions 0..CONTEXT-1 exist: the prompt takes len(PROMPT), each new token one more, and
    # the token sampled from the last position's logits needs no slot of its own.
    room = CONTEXT - len(PROMPT) + 1
    result = generator.generate(PROMPT, max_new_tokens=CONTEXT, eos_ids=[])
    assert result.stop_reason == "context_full"
    assert result.tokens == _eager_generate(model, PROMPT, room)[0]


def test_sampling_is_seeded_and_matches_the_eager_loop(pte, model):
    generator = Generator(pte)
    a = generator.generate(PROMPT, max_new_tokens=12, temperature=1.5, top_p=0.9, seed=7, eos_ids=[])
    b = generator.generate(PROMPT, max_new_tokens=12, temperature=1.5, top_p=0.9, seed=7, eos_ids=[])
    c = generator.generate(PROMPT, max_new_tokens=12, temperature=1.5, top_p=0.9, seed=8, eos_ids=[])
    want, _ = _eager_generate(model, PROMPT, 12, temperature=1.5, top_p=0.9, seed=7)
    assert a.tokens == b.tokens == want
    assert c.tokens != a.tokens
    greedy = generator.generate(PROMPT, max_new_tokens=12, eos_ids=[])
    assert a.tokens != greedy.tokens


def test_prompt_longer_than_the_context_is_refused(pte, model):
    generator = Generator(pte)
    with pytest.raises(ValueError, match=f"exceeds the context of {CONTEXT} tokens"):
        generator.generate(list(range(VOCAB)) + list(range(CONTEXT - VOCAB + 1)), max_new_tokens=1)


def test_forward_returns_every_positions_logits_on_request(pte, model):
    generator = Generator(pte)
    chunk = PROMPT[:MAX_SEQ_LEN]
    got = generator.forward(chunk, 0, all_positions=True)
    model.k_cache.zero_()
    with torch.no_grad():
        want = model(torch.tensor([chunk]), torch.arange(len(chunk)))[0]
    assert got.shape == (len(chunk), VOCAB)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("last_logits_only", [False, True])
def test_greedy_step_picks_what_forward_and_greedy_token_pick(tmp_path, model, last_logits_only):
    """The decode fast path against the general one, step by step from the same prefill."""
    model.last_logits_only = last_logits_only
    by_forward, by_step = _export(tmp_path, model), _export(tmp_path, model)
    model.last_logits_only = False
    logits, _ = by_forward.prefill(PROMPT)
    by_step.prefill(PROMPT)
    a = b = greedy_token(logits)
    for position in range(len(PROMPT), len(PROMPT) + 15):
        a = greedy_token(by_forward.forward([a], position))
        b = by_step.greedy_step(b, position)
        assert a == b, position


def test_logits_outlive_the_next_call(pte, model):
    generator = Generator(pte)
    first = generator.forward([PROMPT[0]], 0)
    kept = first.clone()
    second = generator.forward([PROMPT[1]], 1)
    assert not torch.equal(second, kept)
    torch.testing.assert_close(first, kept, rtol=0, atol=0)  # not overwritten by the second call


def test_loading_freezes_startup_objects_and_leaves_the_collector_on(pte):
    """Objects alive at load time (torch, the program) leave the collector's view, so decode
    steps do not pay for walking them; garbage made afterwards is still collected."""
    import gc
    import weakref

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    Generator(pte)
    assert gc.isenabled() and gc.get_freeze_count() > 10_000

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle only the collector can free
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
