"""After quantization the export holds no view into the checkpoint file, so its mapping closes.

Loaded weights are views into the memory-mapped safetensors file; the float weights that
quantization replaced would otherwise stay resident through lowering.
"""

from pathlib import Path

import torch

from executorch_optimum.export import ExportOptions, _load_model, _release_checkpoint_file
from executorch_optimum.xnnpack import QuantizationConfig, apply_quantization_
from tests.support.tiny_models import tiny_model


def _mapped(path: Path) -> bool:
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


def test_quantized_model_releases_the_checkpoint_mapping(tmp_path):
    ckpt = tmp_path / "ckpt"
    tiny_model("llama").save_pretrained(ckpt)
    weights = ckpt / "model.safetensors"
    model = _load_model(ExportOptions(model_dir=ckpt, output=tmp_path / "model.pte"))
    assert _mapped(weights), "the loader no longer maps the checkpoint: this test needs a new probe"
    apply_quantization_(model, QuantizationConfig(qlinear="8da4w", qembedding="8w"))
    assert _mapped(weights)  # the norms are still views into it
    before = {name: t.detach().clone() for name, t in model.state_dict().items() if type(t) is torch.Tensor}
    _release_checkpoint_file(model)
    assert not _mapped(weights)
    after = model.state_dict()
    assert before and all(torch.equal(after[name], value) for name, value in before.items())
