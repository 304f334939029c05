"""The lowered .pte, chained by our runtime (executorch_optimum.runtime.multimodal), matches eager.

Each test runs for both families (Gemma 3, LLaVA) and for Gemma 3 on our attention kernels: one
lowering per case per file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from executorch_optimum import kernels
from executorch_optimum.modules import ImageTextToTextExportableModule
from executorch_optimum.runtime.multimodal import ImageError, MultimodalGenerator
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.multimodal.tiny_vlm import FAMILIES, IMAGE_TOKEN, TinyVLM, eager_vlm_trace, program_vlm_trace
from tests.support.parity import assert_same_run

STEPS = 32
CHUNK = 8


# (family, native_kernels): Gemma 3 also with the text decoder's attention on our kernels
# (its sliding layer on an exact-size ring), which the runtime loads before the program.
CASES = [(vlm, False) for vlm in FAMILIES] + [(FAMILIES[0], True)]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case[0].name + ("-native" if case[1] else ""))
def lowered(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyVLM, torch.nn.Module, Path]:
    vlm, native = request.param
    model = vlm.build()
    reference = copy.deepcopy(model)
    module = ImageTextToTextExportableModule(
        model, max_seq_len=CHUNK, max_context_len=64, native_kernels=native
    )
    result = export_to_executorch_with_xnnpack(module)
    # The projections of the text decoder and the vision tower run in XNNPACK.
    portable = result.report.portable_ops()
    assert not [op for op in portable if "linear" in op or "mm" in op], portable
    attention = {op for op in portable if "sdpa" in op}
    assert attention and all(op.startswith("eo.") == native for op in attention), attention
    if native:
        kernels.load_et_kernels()
    pte = tmp_path_factory.mktemp("pte") / "vlm.pte"
    pte.write_bytes(result.buffer)
    return vlm, reference, pte


def _runtime_trace(generator: MultimodalGenerator, prompt, pixels, forced):
    generator.reset()

    def decode(embeddings: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return generator.decode_step(embeddings, int(positions[0])).view(1, 1, -1)

    def encode(image: torch.Tensor) -> torch.Tensor:
        return generator.encode_image(image)

    embed = lambda ids: generator.embed(ids[0].tolist())  # noqa: E731
    return program_vlm_trace(embed, encode, decode, prompt, pixels, STEPS, CHUNK, forced)


def test_metadata_and_methods(lowered) -> None:
    vlm, _, pte = lowered
    generator = MultimodalGenerator(pte)
    assert {"token_embedding", "vision_encoder", "text_decoder"} <= set(generator.program.method_names)
    assert generator.image_token_id == IMAGE_TOKEN and generator.image_size == vlm.image_size
    assert generator.tokens_per_image == vlm.tokens_per_image
    assert (generator.boi_token_id, generator.eoi_token_id) == (vlm.boi, vlm.eoi)
    assert generator.metadata.max_seq_len == CHUNK and generator.metadata.max_context_len == 64


def test_image_prompt_logits_and_tokens(lowered) -> None:
    vlm, reference, pte = lowered
    generator = MultimodalGenerator(pte)
    prompt, pixels = vlm.image_prompt(), vlm.pixel_values()
    want = eager_vlm_trace(reference, prompt, pixels, STEPS)
    assert_same_run(_runtime_trace(generator, prompt, pixels, want.tokens), want)
    # generate(): same greedy tokens, from a fresh cache, twice in a row.
    for _ in range(2):
        result = generator.generate(prompt[0].tolist(), [pixels], max_new_tokens=STEPS, stop_on_eos=False)
        assert result.tokens == want.tokens
        assert result.stop_reason == "max_new_tokens"


def test_text_only_prompt(lowered) -> None:
    _, reference, pte = lowered
    generator = MultimodalGenerator(pte)
    prompt = torch.tensor([[1, 17, 99, 4, 230, 8, 41, 77, 12, 5, 3]])
    want = eager_vlm_trace(reference, prompt, None, STEPS)
    assert_same_run(_runtime_trace(generator, prompt, None, want.tokens), want)
    result = generator.generate(prompt[0].tolist(), max_new_tokens=STEPS, stop_on_eos=False)
    assert result.tokens == want.tokens


def test_image_token_count_must_match(lowered) -> None:
    vlm, _, pte = lowered
    generator = MultimodalGenerator(pte)
    prompt = vlm.image_prompt()[0].tolist()
    with pytest.raises(ValueError, match="image tokens"):
        generator.generate(prompt, [], max_new_tokens=1)
    with pytest.raises(ValueError, match="image tokens"):
        generator.generate(prompt, [vlm.pixel_values(), vlm.pixel_values()], max_new_tokens=1)


def _stock_runner_tokens(pte: Path, tmp_path: Path, inputs: list, max_new_tokens: int) -> list[int]:
    """Greedy ids from ExecuTorch's stock C++ MultimodalRunner (through its Python binding)."""
    from executorch.extension.llm.runner import GenerationConfig, MultimodalRunner
    from tokenizers import Tokenizer, models

    # One printable piece per id ("<007>"), so the runner's text output maps back to ids.
    tokenizer = Tokenizer(models.BPE(vocab={f"<{i:03d}>": i for i in range(256)}, merges=[]))
    tokenizer_path = tmp_path / "tokenizer.json"
    tokenizer.save(str(tokenizer_path))
    pieces: list[str] = []
    config = GenerationConfig(
        echo=False, max_new_tokens=max_new_tokens, temperature=0.0, num_bos=0, num_eos=0
    )
    MultimodalRunner(str(pte), str(tokenizer_path)).generate(inputs, config, token_callback=pieces.append)
    return [int(piece.strip("<>")) for piece in pieces]


def test_stock_multimodal_runner_gives_our_tokens(lowered, tmp_path: Path) -> None:
    from executorch.extension.llm.runner import make_image_input, make_token_input

    vlm, _, pte = lowered
    generator = MultimodalGenerator(pte)
    ids, pixels = vlm.image_prompt()[0].tolist(), vlm.pixel_values()
    ours = generator.generate(ids, [pixels], max_new_tokens=16, stop_on_eos=False).tokens
    assert 2 not in ours  # no EOS inside the window: both runners produce all 16 tokens
    # The stock runner feeds each input in one decoder call: text, the image's embeddings, text.
    first = ids.index(IMAGE_TOKEN)
    last = first + ids.count(IMAGE_TOKEN)
    inputs = [make_token_input(ids[:first]), make_image_input(pixels[0]), make_token_input(ids[last:])]
    assert _stock_runner_tokens(pte, tmp_path, inputs, 16) == ours

    text = [1, 17, 99, 4, 230, 8, 41]  # at most get_max_seq_len: the stock prefiller does not chunk
    ours_text = generator.generate(text, max_new_tokens=16, stop_on_eos=False).tokens
    assert 2 not in ours_text
    assert _stock_runner_tokens(pte, tmp_path, [make_token_input(text)], 16) == ours_text


def test_image_file_through_preprocessing(lowered, tmp_path: Path) -> None:
    vlm, reference, pte = lowered
    generator = MultimodalGenerator(pte)
    g = torch.Generator().manual_seed(5)
    image = torch.randint(0, 256, (48, 40, 3), generator=g, dtype=torch.uint8)
    path = tmp_path / "cat.ppm"
    path.write_bytes(b"P6\n40 48\n255\n" + image.numpy().tobytes())
    pixels = generator.image_pixels(path)
    assert pixels.shape == (1, 3, vlm.image_size, vlm.image_size)
    torch.testing.assert_close(pixels, generator.image_pixels(image))
    prompt = vlm.image_prompt()
    want = eager_vlm_trace(reference, prompt, pixels, 8)
    assert (
        generator.generate(prompt[0].tolist(), [pixels], max_new_tokens=8, stop_on_eos=False).tokens
        == want.tokens
    )
    with pytest.raises(ImageError, match="no image file"):
        generator.image_pixels(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match="not a supported image"):
        generator.image_pixels(tmp_path / "text.png")
    with pytest.raises(ImageError, match="channels"):
        generator.image_pixels(torch.zeros(8, 8, 2, dtype=torch.uint8))
