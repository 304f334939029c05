"""One tiny fp32 export, reused: the measured, cached export; the runtime speed function
gives eager transformers' greedy tokens; the whole pipeline writes its outputs."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import pytest
import torch

from executorch_optimum.benchmark import workdir
from executorch_optimum.benchmark.eager_speed import eager_run, load_eager_model, measure_eager
from executorch_optimum.benchmark.errors import BenchmarkError
from executorch_optimum.benchmark.exporters import OurExporter
from executorch_optimum.benchmark.progress import Progress
from executorch_optimum.benchmark.runtime_speed import (
    PteBench,
    context_positions,
    make_prompt,
    measure_context_sweep,
    measure_in_both_load_orders,
    measure_interleaved,
    measure_pte,
    run_in_turns,
)
from executorch_optimum.benchmark.zoo import config_path

MODEL = "smollm2_tiny"
MAX_SEQ_LEN, MAX_CONTEXT = 16, 96


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def exported(work: Path) -> dict:
    progress = Progress(quiet=True)
    checkpoint, key = workdir.ensure_checkpoint(work, MODEL, config_path(MODEL), progress)
    exporter = OurExporter(max_seq_len=MAX_SEQ_LEN, max_context_len=MAX_CONTEXT)
    measured = workdir.cached_export(work, exporter, MODEL, "fp32", checkpoint, key, progress)
    return {"checkpoint": checkpoint, "key": key, "exporter": exporter, "measured": measured}


def test_export_is_measured_and_cached(work: Path, exported: dict) -> None:
    first = exported["measured"]
    pte = Path(first.pte)
    assert pte.is_file() and pte.stat().st_size == first.pte_bytes
    assert not first.cached
    assert first.wall_s > 0 and first.cpu_s > 0
    assert first.peak_rss_bytes > 100 * 2**20  # a process that imported torch
    assert "export+lower" in first.phases
    stored = json.loads((pte.parent / workdir.MEASUREMENT_FILE).read_text())
    assert stored["pte"] == "model.pte" and stored["cached"] is False

    lines: list[str] = []
    again = workdir.cached_export(
        work, exported["exporter"], MODEL, "fp32", exported["checkpoint"], exported["key"], lines.append
    )
    assert again.cached
    assert (again.wall_s, again.peak_rss_bytes, again.pte) == (first.wall_s, first.peak_rss_bytes, first.pte)
    assert any("export cached" in line for line in lines)
    # Other settings are another cache entry.
    other = OurExporter(max_seq_len=MAX_SEQ_LEN, max_context_len=MAX_CONTEXT + 1)
    assert workdir.export_entry(work, other, MODEL, "fp32", exported["key"]) != pte.parent


def test_runtime_gives_the_eager_greedy_tokens(exported: dict) -> None:
    config = json.loads((exported["checkpoint"] / "config.json").read_text())
    prompt = make_prompt(40, config["vocab_size"])  # 3 chunks of 16 (the last one short)
    bench = PteBench(exported["measured"].pte, prompt, new_tokens=24)
    assert bench.chunk == MAX_SEQ_LEN
    (speed,) = measure_interleaved([bench], repeats=2)
    assert len(speed.prefill_tokens_per_s) == len(speed.decode_tokens_per_s) == 2
    assert all(v > 0 for v in speed.prefill_tokens_per_s + speed.decode_tokens_per_s)
    # Each decode call is timed: the calls add up to the run's decode time.
    sample = bench.run()
    assert len(sample.decode_step_s) == 24 and min(sample.decode_step_s) > 0
    assert sum(sample.decode_step_s) == pytest.approx(sample.decode_s, rel=1e-9)
    assert len(speed.decode_step_tokens_per_s) == 2

    model = load_eager_model(exported["checkpoint"])
    want = eager_run(model, prompt, 24).tokens
    assert len(want) == 25
    assert speed.tokens == want
    assert measure_pte(exported["measured"].pte, prompt, 24, repeats=1, warmup=False).tokens == want
    # Prefilling the prompt again from position 0 rewrites the same cache slots: same tokens.
    again = measure_pte(exported["measured"].pte, prompt, 24, repeats=1, warmup=False, prefill_calls=3)
    assert again.tokens == want
    before = torch.get_num_threads()
    eager = measure_eager(model, prompt, 24, threads=before + 1, repeats=1)
    assert eager.tokens == want and torch.get_num_threads() == before  # its thread count is restored


def test_programs_take_turns_call_by_call(exported: dict) -> None:
    """Interleaved runs alternate single timed calls between the programs (a slow spell of
    the machine hits them alike), and each still computes its own greedy tokens."""
    pte = exported["measured"].pte
    prompt = make_prompt(20, 512)
    # 1 prefill + 6 decode calls, and 2 prefills + 9 decode calls.
    benches = [PteBench(pte, prompt, new_tokens=6), PteBench(pte, prompt[:12], new_tokens=9, prefill_calls=2)]
    alone = [bench.run().tokens for bench in benches]
    turns: list[int] = []
    for i, bench in enumerate(benches):
        calls = bench.calls

        def logged(_i=i, _calls=calls):  # noqa: ANN202
            made = _calls()
            while True:
                try:
                    next(made)
                except StopIteration as done:
                    return done.value
                turns.append(_i)
                yield

        bench.calls = logged
    first, second = run_in_turns(benches)
    assert [first.tokens, second.tokens] == alone
    assert turns == [0, 1, 1, 0] * 3 + [0, 1] + [1] * 4
    assert len(first.decode_step_s) == 6 and len(second.decode_step_s) == 9


def test_half_the_repeats_load_the_programs_in_reverse(exported: dict) -> None:
    """A later-loaded program ran faster; the comparison loads each order for half the runs,
    releases a set before loading the next, and hands each program back its own runs."""
    pte = exported["measured"].pte
    prompt = make_prompt(12, 512)
    loads: list[str] = []
    loaded: list[weakref.ref] = []

    def loader(name: str, new_tokens: int):  # noqa: ANN202
        def load() -> PteBench:
            if len(loads) == 2:  # the second set begins: the first one must be released
                assert all(ref() is None for ref in loaded)
            loads.append(name)
            bench = PteBench(pte, prompt, new_tokens=new_tokens)
            loaded.append(weakref.ref(bench))
            return bench

        return load

    a, b = measure_in_both_load_orders([loader("a", 3), loader("b", 5)], repeats=3, warmup=False)
    assert loads == ["a", "b", "b", "a"]
    assert len(a.decode_s) == len(b.decode_s) == len(a.decode_median_step_s) == 3
    assert (a.new_tokens, b.new_tokens) == (3, 5)
    assert len(a.tokens) == 4 and len(b.tokens) == 6
    assert b.tokens[:4] == a.tokens  # the same program and prompt, greedy
    with pytest.raises(BenchmarkError, match="repeats must be >= 1"):
        measure_in_both_load_orders([loader("a", 1)], repeats=0)


def test_runtime_rejects_too_long_a_run(exported: dict) -> None:
    with pytest.raises(BenchmarkError, match="exceeds its context of 96"):
        PteBench(exported["measured"].pte, [5] * 90, new_tokens=7)
    with pytest.raises(BenchmarkError, match="prefill_calls must be >= 1"):
        PteBench(exported["measured"].pte, [5], new_tokens=1, prefill_calls=0)
    with pytest.raises(BenchmarkError, match="cannot load"):
        PteBench("/nonexistent.pte", [5], new_tokens=1)


def test_context_sweep(exported: dict) -> None:
    assert context_positions(96, 16) == [80]
    assert context_positions(2048, 16) == [128, 512, 1024, 2032]
    bench = PteBench(exported["measured"].pte, make_prompt(8, 512), new_tokens=1)
    (per_position,) = measure_context_sweep([bench], [8, 64], steps=4, repeats=1)
    assert sorted(per_position) == [8, 64]
    assert all(stat.median > 0 for stat in per_position.values())
    with pytest.raises(BenchmarkError, match="exceeds the context"):
        bench.decode_at(94, 4)


def test_whole_pipeline_from_the_cache(work: Path, exported: dict, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from executorch_optimum.benchmark.cli import main
    from executorch_optimum.benchmark.results import from_json

    out = tmp_path / "results"
    argv = ["--models", MODEL, "--variants", "fp32", "--plot_models", MODEL, "--work_dir", str(work)]
    argv += ["--out_dir", str(out), "--max_seq_len", str(MAX_SEQ_LEN), "--max_context_len", str(MAX_CONTEXT)]
    argv += ["--prompt_len", "20", "--new_tokens", "8", "--repeats", "1", "--threads", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "export cached" in captured.err  # no second export
    assert sorted(p.name for p in out.iterdir()) == ["decode_vs_context.png", "results.json", "results.md"]
    results = from_json((out / "results.json").read_text())
    (row,) = results.rows
    assert row.export.cached and row.tokens_match_eager is True
    assert row.bytes_per_token > 0 and row.roofline_tokens_per_s > 0
    assert (out / "decode_vs_context.png").read_bytes().startswith(b"\x89PNG")
    assert "| smollm2_tiny | fp32 | ours |" in captured.out
    assert (out / "results.md").read_text() in captured.out + "\n"


class _CopyExporter:
    """A second 'exporter' that ships our cached .pte: exercises the comparison path
    (interleaved runtime runs, ratios) without a second export."""

    name = "copy"

    def __init__(self, pte: Path) -> None:
        self.pte = pte

    def cache_key(self) -> str:
        return str(self.pte)

    def export(self, checkpoint_dir: Path, variant: str, out_dir: Path, progress: object = None) -> object:
        import shutil
        from types import SimpleNamespace

        shutil.copyfile(self.pte, out_dir / "model.pte")
        return SimpleNamespace(
            pte=out_dir / "model.pte", wall_s=2.0, user_s=1.0, sys_s=0.5, peak_rss_bytes=10
        )


def test_comparison_rows_and_ratios(work: Path, exported: dict) -> None:
    from executorch_optimum.benchmark.exporters import ForeignExporter
    from executorch_optimum.benchmark.runner import Benchmark, BenchmarkConfig

    config = BenchmarkConfig(
        models=[MODEL], variants=["fp32"], work_dir=work, prompt_len=20, new_tokens=8, threads=1, repeats=2
    )
    config.eager = False
    copy = ForeignExporter(_CopyExporter(Path(exported["measured"].pte)))
    results = Benchmark(config, [exported["exporter"], copy], Progress(quiet=True)).run()
    ours, theirs = results.rows
    assert (ours.exporter, theirs.exporter) == ("ours", "copy")
    assert theirs.export.cpu_s == 1.5 and theirs.export.pte_bytes == ours.export.pte_bytes
    (ratio_row,) = results.ratios
    ratios = {r.metric: r.stat for r in ratio_row.ratios}
    assert ratios[".pte size"].median == 1.0
    assert ratios["export CPU s"].median == pytest.approx(ours.export.cpu_s / 1.5)
    assert ratios["decode tok/s"].n == 2  # one ratio per interleaved repeat
    assert ratios["decode tok/s (median step)"].n == 2
    steps = [
        a / b for a, b in zip(ours.decode_step_tokens_per_s, theirs.decode_step_tokens_per_s, strict=True)
    ]
    assert ratios["decode tok/s (median step)"].median == pytest.approx(
        sorted(steps)[0] / 2 + sorted(steps)[1] / 2
    )
    # Each compared program ran traced decode steps; their groups fit in the step.
    for row in (ours, theirs):
        profile = row.decode_profile_us
        assert profile["step"] > 0 and profile["GEMMs"] > 0
        assert 0 < sum(v for k, v in profile.items() if k != "step") <= 1.1 * profile["step"]


def test_fresh_re_exports_with_the_named_exporters_only(work: Path, exported: dict) -> None:
    from executorch_optimum.benchmark.exporters import ForeignExporter
    from executorch_optimum.benchmark.runner import Benchmark, BenchmarkConfig

    config = BenchmarkConfig(
        models=[MODEL], variants=["fp32"], work_dir=work, prompt_len=20, new_tokens=8, threads=1, repeats=1
    )
    config.eager = False
    copy = ForeignExporter(_CopyExporter(Path(exported["measured"].pte)))
    Benchmark(config, [exported["exporter"], copy], Progress(quiet=True)).run()  # both cached now
    config.fresh = frozenset({"copy"})
    ours, theirs = Benchmark(config, [exported["exporter"], copy], Progress(quiet=True)).run().rows
    assert ours.export.cached and not theirs.export.cached


def test_native_kernels_export_is_measured_with_our_kernels(
    work: Path, exported: dict, tmp_path: Path
) -> None:
    """`--native_kernels`: ours exports with every attention on eo::ring_sdpa, a cache entry of
    its own, and the runtime (which loads our kernels) still gives eager's greedy tokens."""
    from executorch_optimum.benchmark.cli import main
    from executorch_optimum.benchmark.results import from_json

    out = tmp_path / "results"
    argv = ["--models", MODEL, "--variants", "fp32", "--plot_models", "", "--work_dir", str(work)]
    argv += ["--out_dir", str(out), "--max_seq_len", str(MAX_SEQ_LEN), "--max_context_len", str(MAX_CONTEXT)]
    argv += [
        "--prompt_len",
        "20",
        "--new_tokens",
        "8",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--native_kernels",
    ]
    assert main(argv) == 0
    (row,) = from_json((out / "results.json").read_text()).rows
    assert row.exporter == "ours+eo_kernels" and not row.export.cached
    assert row.tokens_match_eager is True
    native_exporter = OurExporter(max_seq_len=MAX_SEQ_LEN, max_context_len=MAX_CONTEXT, native_kernels=True)
    entry = workdir.export_entry(work, native_exporter, MODEL, "fp32", exported["key"])
    native, stock = (entry / "model.pte").read_bytes(), Path(exported["measured"].pte).read_bytes()
    assert b"ring_sdpa" in native and b"custom_sdpa" not in native
    assert b"custom_sdpa" in stock and b"ring_sdpa" not in stock


def _cache_dtypes(pte: bytes) -> list[int]:
    """Scalar types (ExecuTorch's enum) of the program's [1, context, kv heads, head dim]
    tensors: its KV caches."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    config = json.loads(config_path(MODEL).read_text())
    shape = [1, MAX_CONTEXT, config["num_key_value_heads"], config["head_dim"]]
    restored = deserialize_pte_binary(pte)
    plan = getattr(restored, "program", restored).execution_plan[0]
    tensors = [value.val for value in plan.values if hasattr(value.val, "scalar_type")]
    return [int(t.scalar_type) for t in tensors if list(t.sizes) == shape]


def test_half_kv_cache_export_is_measured(work: Path, exported: dict, tmp_path: Path) -> None:
    """`--native_kernels --kv_cache_dtype float16`: an exporter of its own whose program holds
    float16 caches (where the default export's are float32), measured in the runtime."""
    from executorch_optimum.benchmark.cli import main
    from executorch_optimum.benchmark.results import from_json

    out = tmp_path / "results"
    argv = ["--models", MODEL, "--variants", "fp32", "--plot_models", "", "--work_dir", str(work)]
    argv += ["--out_dir", str(out), "--max_seq_len", str(MAX_SEQ_LEN), "--max_context_len", str(MAX_CONTEXT)]
    argv += ["--prompt_len", "20", "--new_tokens", "8", "--repeats", "1", "--threads", "1", "--no_eager"]
    argv += ["--native_kernels", "--kv_cache_dtype", "float16"]
    assert main(argv) == 0
    (row,) = from_json((out / "results.json").read_text()).rows
    assert row.exporter == "ours+eo_kernels+kv_float16" and min(row.decode_tokens_per_s) > 0
    exporter = OurExporter(
        max_seq_len=MAX_SEQ_LEN, max_context_len=MAX_CONTEXT, native_kernels=True, kv_cache_dtype="float16"
    )
    entry = workdir.export_entry(work, exporter, MODEL, "fp32", exported["key"])
    half, float32 = 5, 6  # ExecuTorch's ScalarType values
    layers = json.loads(config_path(MODEL).read_text())["num_hidden_layers"]
    assert _cache_dtypes((entry / "model.pte").read_bytes()) == [half] * (2 * layers)
    assert _cache_dtypes(Path(exported["measured"].pte).read_bytes()) == [float32] * (2 * layers)
