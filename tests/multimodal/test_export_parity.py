"""The three exported methods (ep.module()), chained, match the eager model (Gemma 3, LLaVA)."""

from __future__ import annotations

import copy

import pytest
import torch

from executorch_optimum.modules import ImageTextToTextExportableModule, fuse_attention_inputs
from tests.multimodal.tiny_vlm import (
    FAMILIES,
    IMAGE_TOKEN,
    TinyVLM,
    eager_vlm_trace,
    program_vlm_trace,
    tiny_gemma3_vlm,
)
from tests.support.parity import assert_same_run, max_logit_diff

STEPS = 32
CHUNK = 8


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda vlm: vlm.name)
def exported(request) -> tuple[TinyVLM, torch.nn.Module, ImageTextToTextExportableModule, dict]:
    vlm: TinyVLM = request.param
    model = vlm.build()
    reference = copy.deepcopy(model)
    module = ImageTextToTextExportableModule(model, max_seq_len=CHUNK, max_context_len=64)
    return vlm, reference, module, module.export()


def _trace(programs: dict, prompt: torch.Tensor, pixels: torch.Tensor | None, forced: list[int]):
    embed = programs["token_embedding"].module()
    encode = programs["vision_encoder"].module()
    decode = programs["text_decoder"].module()
    return program_vlm_trace(embed, encode, decode, prompt, pixels, STEPS, CHUNK, forced)


def test_method_names_and_shapes(exported) -> None:
    vlm, _, module, programs = exported
    assert set(programs) == {"token_embedding", "vision_encoder", "text_decoder"}
    with torch.no_grad():
        embeddings = programs["token_embedding"].module()(torch.tensor([[1, 5, IMAGE_TOKEN]]))
        image = programs["vision_encoder"].module()(vlm.pixel_values())
        logits = programs["text_decoder"].module()(embeddings, torch.arange(3))
    assert embeddings.shape == (1, 3, 64)
    assert image.shape == (1, vlm.tokens_per_image, 64)
    assert logits.shape == (1, 1, 256)
    meta = module.metadata()
    assert meta["get_max_seq_len"] == CHUNK and meta["get_max_context_len"] == 64
    assert meta["image_token_id"] == IMAGE_TOKEN and meta["image_size"] == vlm.image_size
    assert meta["tokens_per_image"] == vlm.tokens_per_image
    assert meta["use_kv_cache"] is True and meta["enable_dynamic_shape"] is True
    assert meta["get_eos_ids"] == [2]


def test_image_prompt_matches_eager(exported) -> None:
    vlm, reference, _, programs = exported
    prompt, pixels = vlm.image_prompt(), vlm.pixel_values()
    want = eager_vlm_trace(reference, prompt, pixels, STEPS)
    got = _trace(programs, prompt, pixels, want.tokens)
    assert_same_run(got, want)
    # The image matters: another image changes the eager prefill logits.
    other = eager_vlm_trace(reference, prompt, vlm.pixel_values(seed=7), 0)
    assert float((other.logits[0] - want.logits[0]).abs().max()) > 1e-2


def test_text_only_prompt_matches_eager(exported) -> None:
    _, reference, _, programs = exported
    prompt = torch.tensor([[1, 17, 99, 4, 230, 8, 41, 77, 12, 5, 3]])
    want = eager_vlm_trace(reference, prompt, None, STEPS)
    got = _trace(programs, prompt, None, want.tokens)
    assert_same_run(got, want)


def test_llava_drops_the_vision_layers_past_its_features() -> None:
    """Layer -2 of 3 is the 2nd: the 3rd's weights must not reach the program."""
    from tests.multimodal.tiny_vlm import tiny_llava_vlm

    model = tiny_llava_vlm()
    module = ImageTextToTextExportableModule(model, max_seq_len=CHUNK, max_context_len=64)
    assert len(model.model.vision_tower.encoder.layers) == 2
    program = module.export()["vision_encoder"]
    assert not [name for name in program.state_dict if "layers.2." in name]


def test_rejects_unsupported_model_and_cache() -> None:
    from tests.support.tiny_models import tiny_model

    with pytest.raises(NotImplementedError, match="not supported"):
        ImageTextToTextExportableModule(tiny_model("llama"))
    with pytest.raises(NotImplementedError, match="custom KV caches"):
        ImageTextToTextExportableModule(tiny_gemma3_vlm(), use_custom_kv_cache=False)


def test_processor_config_overrides_the_family_defaults() -> None:
    """The checkpoint's preprocessor_config.json, given to the constructor, is what the
    runtime metadata says; without it the family's defaults (CLIP's short side = image size)."""
    from tests.multimodal.tiny_vlm import clip_processor_config, tiny_llava_vlm

    # Values no family defaults to, so the metadata can only have come from this dict.
    processor = clip_processor_config(shortest_edge=40, crop=32) | {
        "image_mean": [0.1, 0.2, 0.3],
        "resample": 2,
    }
    module = ImageTextToTextExportableModule(tiny_llava_vlm(), max_seq_len=CHUNK, processor_config=processor)
    meta = module.metadata()
    assert meta["image_mean"] == pytest.approx(processor["image_mean"])
    assert meta["image_std"] == pytest.approx(processor["image_std"])
    assert meta["image_resample"] == processor["resample"]
    assert meta["image_shortest_edge"] == 40
    default = ImageTextToTextExportableModule(tiny_llava_vlm(), max_seq_len=CHUNK).metadata()
    assert default["image_shortest_edge"] == default["image_size"] != 40
    assert default["image_mean"] != pytest.approx(processor["image_mean"])


def _native_programs(vlm: TinyVLM, kv_cache_dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, dict]:
    """(eager copy, programs) of `vlm` exported with its text attention on our kernels, q/k/v
    fused in the text layers as the export pipeline does for quantized exports (the vision tower
    stays as it is)."""
    model = vlm.build()
    reference = copy.deepcopy(model)
    text_layers = model.config.get_text_config().num_hidden_layers
    vision_linears = sum(type(m) is torch.nn.Linear for m in model.model.vision_tower.modules())
    assert fuse_attention_inputs(model) == text_layers
    assert sum(type(m) is torch.nn.Linear for m in model.model.vision_tower.modules()) == vision_linears
    module = ImageTextToTextExportableModule(
        model, max_seq_len=CHUNK, max_context_len=64, native_kernels=True, kv_cache_dtype=kv_cache_dtype
    )
    return reference, module.export()


@pytest.mark.parametrize("vlm", FAMILIES, ids=lambda vlm: vlm.name)
def test_native_kernels_match_eager(vlm: TinyVLM) -> None:
    """With `native_kernels` the text decoder's attention runs on our rope ops (Gemma 3: after
    its q/k norms, its sliding layer on a ring), and the chained methods still follow eager."""
    reference, programs = _native_programs(vlm)
    targets = {str(n.target) for n in programs["text_decoder"].graph.nodes if n.op == "call_function"}
    prefix = "norm_" if vlm.name == "gemma3" else ""
    assert {f"eo.{prefix}rope_ring_sdpa.default", f"eo.{prefix}rope_kv_update.default"} <= targets
    assert not [t for t in targets if t.startswith("llama.")], targets
    prompt, pixels = vlm.image_prompt(), vlm.pixel_values()
    want = eager_vlm_trace(reference, prompt, pixels, STEPS)
    assert_same_run(_trace(programs, prompt, pixels, want.tokens), want)


def test_half_kv_cache_follows_eager_over_rounded_keys_and_values() -> None:
    """Gemma 3 with float16 caches (ring and full layer) follows eager transformers whose cache
    rounds each key and value to float16, more closely than the exact float32 run."""
    vlm = FAMILIES[0]
    reference, programs = _native_programs(vlm, torch.float16)
    prompt, pixels = vlm.image_prompt(), vlm.pixel_values()
    rounded = eager_vlm_trace(reference, prompt, pixels, STEPS, kv_dtype=torch.float16)
    exact = eager_vlm_trace(reference, prompt, pixels, STEPS)
    got = _trace(programs, prompt, pixels, rounded.tokens)
    assert_same_run(got, rounded)
    assert max_logit_diff(got, rounded) < max_logit_diff(got, exact)
