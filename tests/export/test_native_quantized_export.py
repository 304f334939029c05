"""export_model with --native_kernels and 8da4w: q/k/v run as one XNNPACK linear, their split
hands them to our ops, and the .pte computes what the unfused eager model quantized the same
way computes."""

import copy
import json

import torch
from executorch.runtime import Runtime

from executorch_optimum import kernels
from executorch_optimum.export import ExportOptions, export_model
from executorch_optimum.xnnpack import QuantizationConfig, apply_quantization_
from tests.support.parity import assert_same_run, eager_trace, program_trace
from tests.support.tiny_models import linears_after_lowering, randomise_head_norms_, tiny_model

STEPS = 24
CHUNK = 16


def test_quantized_native_export_fuses_qkv_and_matches_eager(tmp_path):
    model = tiny_model("qwen3")  # grouped-query attention, head norms inside our rope ops
    randomise_head_norms_(model)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    reference = copy.deepcopy(model)
    apply_quantization_(reference, QuantizationConfig(qlinear="8da4w", qlinear_group_size=32))
    prompt = torch.randint(3, model.config.vocab_size, (1, 20))
    want = eager_trace(reference, prompt, STEPS)

    pte, report = tmp_path / "model.pte", tmp_path / "report.json"
    options = ExportOptions(
        model_dir=ckpt,
        output=pte,
        qlinear="8da4w",
        native_kernels=True,
        max_seq_len=CHUNK,
        max_context_len=64,
        report=report,
    )
    export_model(options, progress=lambda _: None)

    forward = json.loads(report.read_text())["delegation"]["methods"]["forward"]
    layers = model.config.num_hidden_layers
    # Three projections became one in every layer, all of them in XNNPACK; the head norms (two
    # per layer, whose means would lower to linears) run inside our rope ops.
    fused_linears = linears_after_lowering(model) - 2 * layers - 2 * layers
    assert forward["delegated"]["XnnpackBackend"]["aten.linear.default"] == fused_linears
    assert forward["portable"]["aten.split_with_sizes_copy.default"] == layers
    assert not [op for op in forward["portable"] if "linear" in op or "mm" in op]

    kernels.load_et_kernels()
    method = Runtime.get().load_program(pte).load_method("forward")
    got = program_trace(lambda ids, pos: method.execute([ids, pos])[0], prompt, STEPS, CHUNK, want.tokens)
    # As test_pte_parity's 8da4w case: XNNPACK's int8 kernels round activations a quantum apart
    # from torchao's reference path here and there.
    assert_same_run(got, want, rel_tol=2e-2)
