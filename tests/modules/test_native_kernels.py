"""Our C++ kernels plugged into the caches and attention match eager, in export and in a .pte:
Gemma 3 and Gemma 2 shaped models (rings; prompt 3x the window, 64 decode steps), and Llama and
Qwen3 shaped ones (full attention on eo::ring_sdpa). The exported models compute q/k/v in one
linear (what the export pipeline does for quantized ones); the eager references keep three."""

import copy

import pytest
import torch
from executorch.runtime import Runtime

from executorch_optimum import kernels
from executorch_optimum.caches import EORingLayer
from executorch_optimum.modules import CausalLMExportableModule, fuse_attention_inputs
from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.support.parity import assert_same_run, eager_trace, max_logit_diff, program_trace
from tests.support.tiny_models import randomise_head_norms_, tiny_model

WINDOW = 8
STEPS = 64


def _case(arch, **overrides):
    model = tiny_model(arch, sliding_window=WINDOW, **overrides)
    if arch == "gemma2":  # make the softcaps bite (see test_softcap.py)
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(25)
                layer.self_attn.k_proj.weight.mul_(25)
    prompt = torch.randint(3, model.config.vocab_size, (1, 3 * WINDOW))
    return model, prompt, eager_trace(model, prompt, STEPS)


def _native_module(model, max_seq_len, kv_cache_dtype=None):
    """q/k/v fused as export_model does for quantized --native_kernels exports (fp32 here: the
    fusion must be exact), on a copy; the eager reference keeps three linears."""
    fused = copy.deepcopy(model)
    assert fuse_attention_inputs(fused) == model.config.num_hidden_layers
    return CausalLMExportableModule(
        fused,
        max_seq_len=max_seq_len,
        max_context_len=96,
        native_kernels=True,
        kv_cache_dtype=kv_cache_dtype,
    )


def _module(model, max_seq_len):
    module = _native_module(model, max_seq_len)
    rings = [layer for layer in module.cache.layers if isinstance(layer, EORingLayer)]
    assert rings and all(r.capacity == WINDOW + max_seq_len - 1 for r in rings)
    return module


def _pte_trace(module, tmp_path, prompt, steps, chunk, forced):
    """Lowers `module`, runs it in the ExecuTorch runtime with our kernels loaded, greedy."""
    pte = tmp_path / "model.pte"
    pte.write_bytes(export_to_executorch_with_xnnpack(module).buffer)
    kernels.load_et_kernels()
    method = Runtime.get().load_program(pte).load_method("forward")
    return program_trace(lambda ids, pos: method.execute([ids, pos])[0], prompt, steps, chunk, forced)


@pytest.mark.parametrize("arch", ["gemma3", "gemma2"])
@pytest.mark.parametrize("max_seq_len", [3 * WINDOW, 5], ids=["one_call", "chunks_of_5"])
def test_exported_native_kernels_match_eager(arch, max_seq_len):
    model, prompt, want = _case(arch)
    program = _module(model, max_seq_len).export()["forward"]
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    # Our kernels rotate the queries and keys themselves (Gemma 3's after its q/k norms): no
    # layer runs the plain ring ops.
    prefix = "norm_" if arch == "gemma3" else ""
    assert {f"eo.{prefix}rope_ring_sdpa.default", f"eo.{prefix}rope_kv_update.default"} <= targets
    assert not targets & {
        "eo.ring_sdpa.default",
        "eo.ring_update_cache.default",
        "llama.update_cache.default",
    }
    got = program_trace(program.module(), prompt, STEPS, chunk=max_seq_len, forced=want.tokens)
    assert_same_run(got, want)


@pytest.mark.parametrize("arch", ["gemma3", "gemma2"])
def test_pte_with_native_kernels_matches_eager(arch, tmp_path):
    # Two layers (one sliding, one global) keep the lowering fast.
    pattern = {"sliding_window_pattern": 2} if arch == "gemma3" else {}
    model, prompt, want = _case(arch, num_hidden_layers=2, **pattern)
    got = _pte_trace(_module(model, 3 * WINDOW), tmp_path, prompt, STEPS, 3 * WINDOW, want.tokens)
    assert_same_run(got, want)


# Full attention on eo::ring_sdpa: a prompt across two of the kernel's 64-key blocks, in one
# call (the many-row prefill path) and in chunks, then single-token decode (the few-row path).
FULL_PROMPT = 70
FULL_STEPS = 20


def _full_case(arch):
    model = tiny_model(arch)
    prompt = torch.randint(3, model.config.vocab_size, (1, FULL_PROMPT))
    return model, prompt, eager_trace(model, prompt, FULL_STEPS)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("max_seq_len", [FULL_PROMPT, 32], ids=["one_call", "chunks_of_32"])
def test_full_attention_on_native_kernels_matches_eager(arch, max_seq_len):
    model, prompt, want = _full_case(arch)
    program = _native_module(model, max_seq_len).export()["forward"]
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    prefix = "norm_" if arch == "qwen3" else ""  # Qwen3's q/k norms go into the ops too
    assert {f"eo.{prefix}rope_ring_sdpa.default", f"eo.{prefix}rope_kv_update.default"} <= targets
    assert not targets & {"llama.custom_sdpa.default", "eo.ring_sdpa.default", "llama.update_cache.default"}
    got = program_trace(program.module(), prompt, FULL_STEPS, chunk=max_seq_len, forced=want.tokens)
    assert_same_run(got, want)


def test_pte_full_attention_on_native_kernels_matches_eager(tmp_path):
    model, prompt, want = _full_case("llama")
    got = _pte_trace(
        _native_module(model, FULL_PROMPT), tmp_path, prompt, FULL_STEPS, FULL_PROMPT, want.tokens
    )
    assert_same_run(got, want)


def _with_head_norm_weights(arch):
    """A model whose q_norm / k_norm weights are random (initialisation leaves them constant)."""
    model, prompt, _ = _full_case(arch)
    randomise_head_norms_(model)
    return model, prompt, eager_trace(model, prompt, FULL_STEPS)


@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
def test_head_norms_fuse_into_the_rope_ops(arch, tmp_path):
    """Qwen3's and Gemma 3's q_norm / k_norm (weight and 1 + weight forms) reach
    eo::norm_rope_ring_sdpa / eo::norm_rope_kv_update as constants: no per-head norm is left in
    the graph, and the exported program and the .pte match eager."""
    model, prompt, want = _with_head_norm_weights(arch)
    layers = model.config.num_hidden_layers
    module = _native_module(model, FULL_PROMPT)
    program = module.export()["forward"]
    rope_ops = [
        n
        for n in program.graph.nodes
        if str(n.target) in {"eo.norm_rope_ring_sdpa.default", "eo.norm_rope_kv_update.default"}
    ]
    assert len(rope_ops) == 2 * layers
    assert all(isinstance(n.args[-2], torch.fx.Node) and n.args[-2].op == "placeholder" for n in rope_ops)
    # Left: every RMSNorm but the two head norms of each layer.
    norms = sum(type(m).__name__.endswith("RMSNorm") for m in model.modules())
    rsqrts = [n for n in program.graph.nodes if str(n.target) == "aten.rsqrt.default"]
    assert len(rsqrts) == norms - 2 * layers
    got = program_trace(program.module(), prompt, FULL_STEPS, chunk=FULL_PROMPT, forced=want.tokens)
    assert_same_run(got, want)
    got = _pte_trace(module, tmp_path, prompt, FULL_STEPS, FULL_PROMPT, want.tokens)
    assert_same_run(got, want)
    assert not any(name.startswith("eo_head_norm") for name, _ in module.model.named_buffers())


def _half_cache_case(arch):
    """A model, a prompt, and eager transformers' greedy runs with float32 and with
    float16-rounded keys and values in its cache."""
    if arch == "gemma3":
        model, prompt, exact = _case(arch, num_hidden_layers=2, sliding_window_pattern=2)
        steps, chunk = STEPS, 3 * WINDOW
    else:
        model, prompt, exact = _with_head_norm_weights(arch)
        steps, chunk = FULL_STEPS, FULL_PROMPT
    return model, prompt, steps, chunk, exact, eager_trace(model, prompt, steps, kv_dtype=torch.float16)


@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
def test_half_kv_cache_is_eager_attention_over_rounded_keys_and_values(arch, tmp_path):
    """kv_cache_dtype=float16: every cache buffer is float16, and the exported program and the .pte
    follow eager transformers whose cache rounds each key and value to float16 (full layers and
    rings, queries and keys rotated inside our ops) more closely than the float32 run."""
    model, prompt, steps, chunk, exact, rounded = _half_cache_case(arch)
    module = _native_module(model, chunk, kv_cache_dtype=torch.float16)
    buffers = [b for s in module.cache.storage_modules() for b in (s.k_cache, s.v_cache)]
    assert buffers and all(b.dtype == torch.float16 for b in buffers)
    program = module.export()["forward"]
    got = program_trace(program.module(), prompt, steps, chunk=chunk, forced=rounded.tokens)
    assert_same_run(got, rounded)
    pte = _pte_trace(module, tmp_path, prompt, steps, chunk, rounded.tokens)
    assert_same_run(pte, rounded)
    assert max_logit_diff(pte, rounded) < max_logit_diff(pte, exact)


def test_half_kv_cache_needs_native_kernels():
    model, _, _ = _full_case("llama")
    with pytest.raises(ValueError, match="needs native_kernels"):
        CausalLMExportableModule(model, max_seq_len=8, max_context_len=32, kv_cache_dtype=torch.float16)
