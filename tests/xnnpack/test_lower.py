"""export_to_executorch_with_xnnpack: metadata, memory planning, initialised buffers, inputs."""

import pytest
import torch
from executorch.runtime import Runtime

from executorch_optimum.xnnpack import export_to_executorch_with_xnnpack


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


class Counter(torch.nn.Module):
    """Adds a running position buffer to its input and advances it: a cache-like mutation."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("cache_positions", torch.arange(4, dtype=torch.float32) + 10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.cache_positions
        self.cache_positions.add_(1.0)
        return out


class Exportable:
    """Two methods and runner metadata, as a task wrapper provides them."""

    def __init__(self) -> None:
        self.mlp = Mlp().eval()

    def export(self) -> dict[str, torch.export.ExportedProgram]:
        x = torch.randn(3, 16)
        dim = torch.export.Dim("rows", min=1, max=8)
        return {
            "forward": torch.export.export(self.mlp, (x,), dynamic_shapes=({0: dim},)),
            "first_layer": torch.export.export(self.mlp.up, (x,)),
        }

    def metadata(self) -> dict:
        return {"get_max_seq_len": 8, "use_kv_cache": True, "get_eos_ids": [2, 7], "get_vocab_size": 48}


def test_methods_and_metadata_round_trip_through_the_runtime():
    module = Exportable()
    lowered = export_to_executorch_with_xnnpack(
        module, metadata={"get_vocab_size": 50, "enable_dynamic_shape": True}
    )
    program = Runtime.get().load_program(lowered.buffer)

    want_metadata = {**module.metadata(), "get_vocab_size": 50, "enable_dynamic_shape": True}
    assert lowered.metadata == want_metadata
    assert program.method_names == {"forward", "first_layer", *want_metadata}
    for name, value in want_metadata.items():
        got = program.load_method(name).execute([])
        assert list(got) == (value if isinstance(value, list) else [value]), name

    for rows in (1, 5):  # dynamic row count within the exported bound
        x = torch.randn(rows, 16)
        (got,) = program.load_method("forward").execute([x])
        with torch.no_grad():
            torch.testing.assert_close(got, module.mlp(x), rtol=1e-5, atol=1e-5)
    x = torch.randn(3, 16)
    (got,) = program.load_method("first_layer").execute([x])
    with torch.no_grad():
        torch.testing.assert_close(got, module.mlp.up(x), rtol=1e-5, atol=1e-5)
    assert lowered.report.delegated_ops()["aten.linear.default"] == 3


def test_graph_inputs_are_not_memory_planned():
    lowered = export_to_executorch_with_xnnpack(
        {"forward": torch.export.export(Mlp(), (torch.randn(2, 16),))}
    )
    meta = Runtime.get().load_program(lowered.buffer).metadata("forward")
    assert not meta.input_tensor_meta(0).is_memory_planned()
    assert meta.output_tensor_meta(0).is_memory_planned()


def _counter_outputs(buffer: bytes, steps: int) -> list[torch.Tensor]:
    method = Runtime.get().load_program(buffer).load_method("forward")
    return [method.execute([torch.zeros(4)])[0].clone() for _ in range(steps)]


def test_named_mutable_buffers_keep_their_initial_value():
    eager = Counter()
    with torch.no_grad():
        want = [eager(torch.zeros(4)) for _ in range(3)]
    exported = torch.export.export(Counter(), (torch.zeros(4),))

    initialised = export_to_executorch_with_xnnpack({"forward": exported})  # default names cache_positions
    for got, expected in zip(_counter_outputs(initialised.buffer, 3), want, strict=True):
        torch.testing.assert_close(got, expected)

    exported = torch.export.export(Counter(), (torch.zeros(4),))
    uninitialised = export_to_executorch_with_xnnpack({"forward": exported}, initialized_buffers=())
    assert not torch.equal(_counter_outputs(uninitialised.buffer, 1)[0], want[0])


def test_single_exported_program_is_the_forward_method():
    lowered = export_to_executorch_with_xnnpack(torch.export.export(Mlp(), (torch.randn(2, 16),)))
    assert Runtime.get().load_program(lowered.buffer).method_names == {"forward"}


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"forward": 3}, "clash with method names: forward"),
        ({"get_eos_ids": [1, "x"]}, "must be an int, bool, float, str, or a list of ints or of floats"),
        ({"image_mean": [0.5, 1]}, "a list of ints or of floats"),
        ({"get_max_seq_len": None}, "must be an int"),
    ],
)
def test_bad_metadata_is_rejected(metadata, message):
    with pytest.raises(ValueError, match=message):
        export_to_executorch_with_xnnpack(
            {"forward": torch.export.export(Mlp(), (torch.randn(2, 16),))}, metadata=metadata
        )


def test_not_an_exportable_module_is_a_type_error():
    with pytest.raises(TypeError, match="exportable module"):
        export_to_executorch_with_xnnpack(Mlp())


def test_lowering_is_byte_identical_across_runs():
    """A cache key is only useful if the same model lowers to the same bytes."""
    torch.manual_seed(3)
    model = Mlp().eval()
    programs = [
        export_to_executorch_with_xnnpack(
            {"forward": torch.export.export(model, (torch.randn(2, 16),))}, metadata={"get_max_seq_len": 2}
        ).buffer
        for _ in range(2)
    ]
    assert programs[0] == programs[1]
