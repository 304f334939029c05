"""Our Generator and ExecuTorch's stock TextLLMRunner agree on the same .pte and tokenizer.

This pins down the runner contract the metadata and the runtime follow: prompt chunking by
get_max_seq_len, cache positions, greedy choice, and stopping on get_eos_ids.
"""

import pytest
import torch
from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from executorch_optimum.runtime import Generator
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.support.tiny_programs import PositionAveragingLm

CONTEXT, MAX_SEQ_LEN = 64, 5
PROMPT = "the quick brown fox jumps over the lazy dog"


def _train_tokenizer(path) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<eos>"]
    )
    corpus = [
        "the quick brown fox jumps over the lazy dog",
        "hello world, a tiny corpus for a tiny tokenizer",
    ]
    tokenizer.train_from_iterator(corpus * 20, trainer)
    tokenizer.save(str(path))
    return tokenizer


def _stock_runner_text(pte, tokenizer_path, max_new_tokens) -> list[str]:
    pieces: list[str] = []
    runner = TextLLMRunner(str(pte), str(tokenizer_path))
    config = GenerationConfig(
        echo=False, max_new_tokens=max_new_tokens, temperature=0.0, num_bos=0, num_eos=0
    )
    runner.generate(PROMPT, config, token_callback=pieces.append)
    return pieces


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    tokenizer_path = root / "tokenizer.json"
    tokenizer = _train_tokenizer(tokenizer_path)
    vocab = tokenizer.get_vocab_size()
    allowed = [i for i in range(vocab) if tokenizer.decode([i]) and tokenizer.decode([i]).isascii()]
    allowed = [i for i in allowed if tokenizer.decode([i]).isprintable()]
    # eos is "<eos>" (id 0), which `allowed` keeps from ever being chosen.
    metadata = {"use_kv_cache": True, "get_eos_ids": [0]}
    torch.manual_seed(0)
    model = PositionAveragingLm(vocab, CONTEXT, MAX_SEQ_LEN, allowed=allowed, extra_metadata=metadata).eval()
    return root, tokenizer_path, tokenizer, model


def test_greedy_text_and_eos_match_the_stock_runner(setup):
    root, tokenizer_path, tokenizer, model = setup
    prompt_ids = tokenizer.encode(PROMPT).ids
    assert len(prompt_ids) > MAX_SEQ_LEN  # the prompt is prefilled in several chunks

    pte = root / "model.pte"
    pte.write_bytes(export_to_executorch_with_xnnpack(model).buffer)
    ours = Generator(pte).generate(prompt_ids, max_new_tokens=16)
    assert ours.stop_reason == "max_new_tokens"
    theirs = _stock_runner_text(pte, tokenizer_path, 16)
    assert theirs == [tokenizer.decode([t]) for t in ours.tokens]

    # A program whose get_eos_ids names a later greedy token: both stop there, eos included.
    # Not the first token: the stock runner checks eos only on decoded tokens, not on the one
    # the prefill gives (where ours stops too, as transformers' generate does).
    eos = next(t for t in ours.tokens[5:] if t != ours.tokens[0])
    first = ours.tokens.index(eos)
    pte_eos = root / "model_eos.pte"
    pte_eos.write_bytes(export_to_executorch_with_xnnpack(model, metadata={"get_eos_ids": [eos]}).buffer)
    ours_eos = Generator(pte_eos).generate(prompt_ids, max_new_tokens=16)
    assert ours_eos.stop_reason == "eos" and ours_eos.tokens == ours.tokens[: first + 1]
    assert _stock_runner_text(pte_eos, tokenizer_path, 16) == [tokenizer.decode([t]) for t in ours_eos.tokens]
