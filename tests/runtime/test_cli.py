"""The generate CLI: same tokens as the Python API, text through a tokenizer, one-line errors."""

import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from executorch_optimum.runtime import Generator
from executorch_optimum.runtime.cli import main
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.support.tiny_programs import PositionAveragingLm

CONTEXT, MAX_SEQ_LEN = 32, 4


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A model dir with model.pte and the tokenizer.json it was built for."""
    root = tmp_path_factory.mktemp("cli")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=280, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(["a small corpus about small models running on small phones"] * 10, trainer)
    tokenizer.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    model = PositionAveragingLm(tokenizer.get_vocab_size(), CONTEXT, MAX_SEQ_LEN, example_len=2).eval()
    (root / "model.pte").write_bytes(export_to_executorch_with_xnnpack(model).buffer)
    return root, tokenizer


def test_prompt_ids_give_the_python_api_tokens_as_json(artifacts, capsys):
    root, _ = artifacts
    assert (
        main(
            [
                "--pte",
                str(root / "model.pte"),
                "--prompt_ids",
                "5,9,13,40,77,2",
                "--max_new_tokens",
                "9",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    want = Generator(root / "model.pte").generate([5, 9, 13, 40, 77, 2], 9)
    assert out["tokens"] == want.tokens
    assert out["stop_reason"] == "max_new_tokens" and out["stats"]["generated_tokens"] == 9
    assert out["stats"]["prefill_tokens_per_s"] > 0


def test_prompt_text_uses_the_tokenizer_beside_the_pte(artifacts, capsys):
    root, tokenizer = artifacts
    prompt = "small models on phones"
    assert main(["--pte", str(root / "model.pte"), "--prompt", prompt, "--max_new_tokens", "6"]) == 0
    captured = capsys.readouterr()
    want = Generator(root / "model.pte").generate(tokenizer.encode(prompt).ids, 6)
    assert captured.out.rstrip("\n") == tokenizer.decode(want.tokens)
    assert "tok/s" in captured.err


def test_threads_size_executorch_pool_and_torch_keeps_one(artifacts, capsys):
    from executorch.extension.pybindings import portable_lib

    root, _ = artifacts
    torch.set_num_threads(2)  # MKL's spinning OpenMP workers would compete with ExecuTorch's pool
    args = ["--pte", str(root / "model.pte"), "--prompt_ids", "5,9", "--max_new_tokens", "4", "--json"]
    assert main([*args, "--threads", "2"]) == 0
    assert portable_lib._threadpool_get_thread_count() == 2
    assert torch.get_num_threads() == 1
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"] == Generator(root / "model.pte").generate([5, 9], 4).tokens


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pte", "{root}/missing.pte", "--prompt_ids", "1"], "no .pte at"),
        (
            ["--pte", "{root}/model.pte", "--prompt_ids", "1,x"],
            "--prompt_ids must be comma-separated integers",
        ),
        (["--pte", "{root}/model.pte", "--prompt_ids", "1,100000"], "prompt ids must be in [0, "),
        (["--pte", "{root}/model.pte", "--prompt", "hi", "--tokenizer", "{root}/nope"], "no tokenizer at"),
        (
            ["--pte", "{root}/model.pte", "--prompt_ids", "1", "--max_new_tokens", "0"],
            "--max_new_tokens must be >= 1",
        ),
        (
            ["--pte", "{root}/model.pte", "--prompt_ids", ",".join(["1"] * 40)],
            "exceeds the context of 32 tokens",
        ),
        (["--pte", "{root}/model.pte", "--prompt_ids", "1", "--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(artifacts, capsys, args, message):
    root, _ = artifacts
    assert main([a.format(root=root) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_prompt_text_without_a_tokenizer(tmp_path, artifacts, capsys):
    root, _ = artifacts
    lonely = tmp_path / "model.pte"
    lonely.write_bytes((root / "model.pte").read_bytes())
    assert main(["--pte", str(lonely), "--prompt", "hello"]) == 2
    assert "--prompt needs a tokenizer" in capsys.readouterr().err


def test_image_on_a_text_only_program_is_an_error(artifacts, tmp_path, capsys):
    root, _ = artifacts
    image = tmp_path / "a.ppm"
    image.write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    assert main(["--pte", str(root / "model.pte"), "--prompt_ids", "1,2", "--image", str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --image needs an image-text-to-text .pte") and err.count("\n") == 1
    assert "is text-only (methods: forward)" in err
