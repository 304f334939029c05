"""A real Llama (transformers, tiny config, no KV cache) through the XNNPACK lowering:
every linear layer is delegated (per the report) and the program matches eager."""

import torch
import transformers
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack
from tests.support.tiny_models import linears_after_lowering

SEQ = 6


class NoCacheLlama(torch.nn.Module):
    """forward(input_ids) -> logits, without a cache: the lowering alone, no caches involved."""

    def __init__(self, model: transformers.PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        with torch.no_grad():
            return {"forward": torch.export.export(self, (_ids(),), strict=False)}

    def metadata(self) -> dict:
        return {"get_max_seq_len": SEQ, "use_kv_cache": False}


def _ids() -> torch.Tensor:
    return torch.tensor([[1, 17, 33, 5, 60, 2]])


def _llama() -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        attn_implementation="eager",
    )
    return transformers.LlamaForCausalLM(config).eval()


def test_all_llama_linears_are_delegated_and_logits_match():
    # fp32 only: lowering a transformers graph costs ~30 s here; 8da4w delegation of every linear
    # is covered on a smaller model in test_quantize.
    wrapper = NoCacheLlama(_llama())
    lowered = export_to_executorch_with_xnnpack(wrapper)

    assert lowered.report.delegated_ops()["aten.linear.default"] == linears_after_lowering(wrapper)
    assert "aten.linear.default" not in lowered.report.portable_ops()
    assert lowered.metadata == wrapper.metadata()

    (got,) = Runtime.get().load_program(lowered.buffer).load_method("forward").execute([_ids()])
    with torch.no_grad():
        want = wrapper(_ids())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * want.abs().max().item())
    assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_each_decoder_layer_is_one_delegate_between_cache_ops():
    """Norms, head splits and rotary all go to XNNPACK, so only the cache update and SDPA
    (portable custom ops) cut a layer: layers + 1 layer-sized partitions, plus the rotary
    table and lm_head ones. Every extra partition costs a dispatch per token and an XNNPACK
    preprocess at export time."""
    from executorch_optimum.modules import CausalLMExportableModule

    layers = 3
    model = _llama()
    model.config.num_hidden_layers = layers
    model = transformers.LlamaForCausalLM(model.config).eval()
    lowered = export_to_executorch_with_xnnpack(
        CausalLMExportableModule(model, max_seq_len=8, max_context_len=32)
    )
    graph = lowered.program.exported_program("forward").graph_module.graph
    delegates = [n for n in graph.nodes if "executorch_call_delegate" in str(n.target)]
    assert len(delegates) <= layers + 4, len(delegates)
    portable = lowered.report.portable_ops()
    # One slice stays: lm_head's last-position pick (the dynamic-length input XNNPACK refuses).
    assert portable.get("aten.slice_copy.Tensor", 0) <= 1, portable
    # (int64 position reshapes stay portable: XNNPACK takes float tensors only.)
    assert not any(name in op for op in portable for name in ("mean", "unsqueeze", "rsqrt", "pow")), portable
