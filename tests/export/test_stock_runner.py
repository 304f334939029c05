"""An LLM .pte from our exporter runs in ExecuTorch's stock TextLLMRunner and generates the
same greedy tokens as our runtime, with a tokenizer trained here."""

import pytest
import torch
from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from executorch_optimum.export import ExportOptions, export_model
from executorch_optimum.runtime import Generator
from executorch_optimum.xnnpack.tied_weights import keys_stored_in_constants
from tests.support.tiny_models import tiny_model

PROMPT = "the quick brown fox jumps over the lazy dog and the cat"


def _printable_tokenizer() -> Tokenizer:
    """Byte-level BPE whose alphabet is only the corpus' characters: every token decodes to
    printable text, so the runner's text pieces compare exactly with our token ids."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<eos>"], show_progress=False)
    corpus = ["the quick brown fox jumps over the lazy dog", "a cat sat on the mat and then ran"]
    tokenizer.train_from_iterator(corpus * 10, trainer)
    return tokenizer


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("stock")
    tokenizer = _printable_tokenizer()
    vocab = tokenizer.get_vocab_size()
    model = tiny_model("llama", vocab_size=vocab, eos_token_id=0, bos_token_id=0, pad_token_id=0)
    with torch.no_grad():  # keep "<eos>" from winning, so generation runs its full length
        model.lm_head.weight[0].zero_()
    ckpt = root / "ckpt"
    model.save_pretrained(ckpt)
    tokenizer.save(str(ckpt / "tokenizer.json"))
    pte = root / "model.pte"
    export_model(
        ExportOptions(model_dir=ckpt, output=pte, max_seq_len=8, max_context_len=64), progress=lambda _: None
    )
    return pte, tokenizer


def test_stock_runner_matches_our_runtime(exported, tmp_path):
    pte, tokenizer = exported
    tokenizer_path = tmp_path / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    prompt_ids = tokenizer.encode(PROMPT).ids
    assert len(prompt_ids) > 8  # prefilled in several chunks by both runners

    ours = Generator(pte).generate(prompt_ids, max_new_tokens=24)
    assert len(ours.tokens) == 24

    pieces: list[str] = []
    config = GenerationConfig(echo=False, max_new_tokens=24, temperature=0.0, num_bos=0, num_eos=0)
    TextLLMRunner(str(pte), str(tokenizer_path)).generate(PROMPT, config, token_callback=pieces.append)
    assert pieces == [tokenizer.decode([t]) for t in ours.tokens]
    # The tied embedding was stored once: XNNPACK's lm_head weight is read from the constants.
    assert len(keys_stored_in_constants(pte.read_bytes())) == 1
